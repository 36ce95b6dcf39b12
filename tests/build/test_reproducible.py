"""Two builds of one commit give the same root image (squashfs) and ISO."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from build.context import Context
from build.pipeline import build_image

# builds the appliance twice: image work, so marked qemu with the other tests of the image
pytestmark = [pytest.mark.root, pytest.mark.integration, pytest.mark.qemu, pytest.mark.slow]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def test_rebuilding_gives_the_same_squashfs_and_iso(
    appliance: Context, results: dict[str, object], tmp_path: Path
) -> None:
    """The root is made again from the cached base (app installed again, overlay applied
    again, squashfs and ISO made again): every byte must match.

    The second build has a work folder and outputs of its own (the base and the wheels of
    the first, read only), so the appliance that the other worker may be booting meanwhile
    is never rewritten, and a path that leaks into an output shows as a difference.
    """
    before = {p.name: sha256(p) for p in (appliance.squashfs, appliance.iso)}
    work = tmp_path / "work"
    (work / "stamps").mkdir(parents=True)
    (work / "cache").symlink_to(appliance.cache)
    (work / "wheels").symlink_to(appliance.wheels)
    shutil.copy2(appliance.stamps / "build_wheels", work / "stamps" / "build_wheels")
    again = Context(
        vendor=appliance.vendor,
        epoch=appliance.epoch,  # the same commit, even if another was made meanwhile
        work=work,
        dist=tmp_path / "dist",
        forced=frozenset({"install_app", "make_iso"}),
    )
    build_image(again, until="make_iso")  # the PXE bundle and checksums are not compared
    assert {"install_app", "configure_root", "make_squashfs", "make_iso"} <= again.ran
    assert not {"bootstrap_rootfs", "build_wheels"} & again.ran
    after = {p.name: sha256(p) for p in (again.squashfs, again.iso)}
    results["reproducible"] = after == before
    results["squashfs_sha256"] = after[again.squashfs.name]
    assert after == before
