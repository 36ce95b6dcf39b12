"""An LVM physical volume imaged by the used blocks of its logical volumes' filesystems.

This kernel has no device-mapper: LVM's tools still write and read the PV's metadata, so
the volume group is made with `pvcreate`/`vgcreate` and its logical volumes with
`vgcfgrestore` (what `lvcreate` would write, without activating anything), and every LV is
reached through a loop device over its extents, as the engine reaches it."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import string
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.repository.store import Repository
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import backup_of, need_tools
from tests.support import MiB, sh

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]

ENV = {**os.environ, "LVM_SUPPRESS_FD_WARNINGS": "1"}
LAYOUT = [
    helpers.GptPart(1, "ext4", 48, "8300", "boot", "boot"),
    helpers.GptPart(2, "", 600, "8e00", name="Linux LVM"),
]
DISK_MIB = 1 + 48 + 600 + 2
VG = "hgtestvg"
# name: (first extent, extents, filesystem); 4 MiB extents
VOLUMES = {"root": (0, 30, "ext4"), "home": (30, 76, "xfs"), "swap": (106, 4, "")}


def lvm(*argv: str, device: str) -> str:
    # No backup or archive of the test's VG in the machine's /etc/lvm.
    quiet = ["--config", "backup { backup = 0 archive = 0 }"]
    result = subprocess.run(
        [argv[0], "--devices", device, *quiet, *argv[1:]], capture_output=True, text=True, env=ENV
    )
    assert result.returncode == 0, f"{argv[0]}: {result.stderr}"
    return result.stdout


def lvm_id() -> str:
    chars = string.ascii_letters + string.digits
    raw = "".join(secrets.choice(chars) for _ in range(32))
    cuts = [6, 4, 4, 4, 4, 4, 6]
    parts, at = [], 0
    for n in cuts:
        parts.append(raw[at : at + n])
        at += n
    return "-".join(parts)


def make_volumes(pv: str, tmp: Path) -> None:
    """The logical volumes of VOLUMES in the VG's metadata, as lvcreate writes them."""
    backup = tmp / "vg.cfg"
    lvm("vgcfgbackup", "-f", str(backup), VG, device=pv)
    text = backup.read_text()
    volumes = "".join(
        f"""
        {name} {{
            id = "{lvm_id()}"
            status = ["READ", "WRITE", "VISIBLE"]
            flags = []
            creation_time = 1700000000
            creation_host = "hourglass-test"
            segment_count = 1
            segment1 {{
                start_extent = 0
                extent_count = {count}
                type = "striped"
                stripe_count = 1
                stripes = ["pv0", {first}]
            }}
        }}"""
        for name, (first, count, _) in VOLUMES.items()
    )
    # The VG's block ends with the last closing brace before the top-level keys that follow.
    end = text.rindex("\n}")
    text = text[:end] + f"\n\tlogical_volumes {{{volumes}\n\t}}" + text[end:]
    backup.write_text(text)
    lvm("vgcfgrestore", "-f", str(backup), VG, device=pv)


@contextlib.contextmanager
def volume(pv: str, name: str) -> Iterator[str]:
    """A loop device over the extents of logical volume ``name``."""
    report = json.loads(
        lvm(
            "pvs",
            "--reportformat",
            "json",
            "--units",
            "b",
            "--nosuffix",
            "-o",
            "pe_start,vg_extent_size",
            pv,
            device=pv,
        )
    )["report"][0]["pv"][0]
    first, count, _ = VOLUMES[name]
    size = int(report["vg_extent_size"])
    offset = int(report["pe_start"]) + first * size
    loop = sh("losetup", "--show", "--find", "--offset", str(offset), "--sizelimit",
              str(count * size), pv).stdout.strip()  # fmt: skip
    try:
        yield loop
    finally:
        subprocess.run(["losetup", "--detach", loop], check=False)


def test_a_physical_volume_is_imaged_by_its_filesystems_used_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 600 MiB PV with an ext4 root, an xfs /home and a swap LV (and free extents): the
    backup reads the metadata and the used blocks (not the free extents, not the unused
    blocks of the filesystems, the swap whole); the restore gives back the same PV, VG and LV
    ids, and each LV's filesystem checks clean with the same files."""
    need_tools()
    image = tmp_path / "pc.img"
    helpers.make_gpt_disk(image, LAYOUT, DISK_MIB)
    with helpers.attached(image) as device:
        helpers.make_fs(helpers.node(device, 1), "ext4", "boot")
        pv = helpers.node(device, 2)
        lvm("pvcreate", "-y", pv, device=pv)
        lvm("vgcreate", "-s", "4M", VG, pv, device=pv)
        make_volumes(pv, tmp_path)
        files = {}
        for name, (_, _, fstype) in VOLUMES.items():
            with volume(pv, name) as lv:
                if fstype:
                    helpers.make_fs(lv, fstype, name)
                    files[name] = helpers.put_files(lv, fstype, tmp_path, 6 * MiB, len(files))
                else:
                    sh("mkswap", "-L", name, lv)
        ids_before = lvm("pvs", "-o", "pv_uuid,vg_uuid", "--noheadings", pv, device=pv)
        lvs_before = lvm("lvs", "-o", "lv_name,lv_uuid,lv_size", "--noheadings", VG, device=pv)
        backup = backup_of(device, tmp_path)
    snapshot = Repository.open(backup.repo.path, backup.passphrase_file.read_text()).snapshots()[-1]
    p2 = snapshot.image("p2")
    assert p2.method == "lvm"
    # Free extents (160 MiB) and the filesystems' free blocks are not read: a quarter of it.
    assert p2.used is not None and p2.used < p2.size // 4, p2.used
    read = snapshot.record.stats.read
    with capsys.disabled():
        print(
            f"\n[lvm] PV of {p2.size // MiB} MiB: {p2.used / MiB:.1f} MiB used imaged; "
            f"the whole snapshot read {read / MiB:.1f} MiB, stored {snapshot.stored / MiB:.1f} MiB"
        )

    target_image = tmp_path / "new.img"
    helpers.garbage_file(target_image, DISK_MIB * MiB)
    with helpers.attached(target_image) as target:
        assert backup.cli("restore", "latest", target, "--yes") == 0
        subprocess.run(["partx", "--update", target], check=False, capture_output=True)
        pv = helpers.node(target, 2)
        ids = lvm("pvs", "-o", "pv_uuid,vg_uuid", "--noheadings", pv, device=pv)
        assert ids == ids_before
        assert lvm("lvs", "-o", "lv_name,lv_uuid,lv_size", "--noheadings", VG, device=pv) == (
            lvs_before
        )
        for name, (_, _, fstype) in VOLUMES.items():
            with volume(pv, name) as lv:
                if not fstype:
                    label = sh("blkid", "-p", "-o", "value", "-s", "LABEL", lv).stdout.strip()
                    assert label == name, "the swap LV, read whole, is as it was"
                    continue
                check = helpers.fsck(lv, fstype)
                assert check.returncode == 0, check.stdout + check.stderr
                assert helpers.read_files(lv, fstype, tmp_path) == files[name]
