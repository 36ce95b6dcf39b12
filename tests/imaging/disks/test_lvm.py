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
import time
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


def make_volumes(pv: str, tmp: Path, volumes: dict[str, tuple[int, int, str]] = VOLUMES) -> None:
    """The logical volumes of ``volumes`` in the VG's metadata, as lvcreate writes them."""
    backup = tmp / "vg.cfg"
    lvm("vgcfgbackup", "-f", str(backup), VG, device=pv)
    text = backup.read_text()
    blocks = "".join(
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
        for name, (first, count, _) in volumes.items()
    )
    # The VG's block ends with the last closing brace before the top-level keys that follow.
    end = text.rindex("\n}")
    text = text[:end] + f"\n\tlogical_volumes {{{blocks}\n\t}}" + text[end:]
    backup.write_text(text)
    lvm("vgcfgrestore", "-f", str(backup), VG, device=pv)


def report(pv: str, what: str, fields: str, *extra: str) -> list[dict[str, str]]:
    out = lvm(what, "--reportformat", "json", "--units", "b", "--nosuffix", "-o", fields,
              *extra, device=pv)  # fmt: skip
    rows: list[dict[str, str]] = []
    for part in json.loads(out)["report"]:
        for value in part.values():
            rows += value
    return rows


def extents(pv: str) -> dict[str, tuple[int, int]]:
    """(first extent, extents) of each LV on ``pv``, as LVM reads its metadata."""
    return {
        r["lv_name"]: (int(r["pvseg_start"]), int(r["pvseg_size"]))
        for r in report(pv, "pvs", "lv_name,pvseg_start,pvseg_size", "--segments", pv)
        if r["lv_name"]
    }


@contextlib.contextmanager
def volume(pv: str, name: str) -> Iterator[str]:
    """A loop device over the extents of logical volume ``name``, where LVM says they are."""
    row = report(pv, "pvs", "pe_start,vg_extent_size", pv)[0]
    first, count = extents(pv)[name]
    size = int(row["vg_extent_size"])
    offset = int(row["pe_start"]) + first * size
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


# A PV of 800 MiB with room between its LVs: an ext4 root, an xfs /home (owners, ACLs, hard
# links, a sparse file), a swap; 4 MiB extents.
BIG_LAYOUT = [
    helpers.GptPart(1, "ext4", 48, "8300", "boot", "boot"),
    helpers.GptPart(2, "", 800, "8e00", name="Linux LVM"),
]
BIG_MIB = 1 + 48 + 800 + 2
BIG = {"root": (0, 60, "ext4"), "home": (70, 90, "xfs"), "swap": (170, 4, "")}


def test_a_physical_volume_to_a_smaller_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The PV's partition shrinks from 800 to about 460 MiB: its LVs are packed at its start
    and the largest give up the room, xfs /home made anew at 300 MiB (same UUID, label and
    files, owners, ACLs, hard links), the ext4 root shrunk by resize2fs, the swap moved
    whole; the PV, VG and LV ids stay. A disk too small for the LVs' data is refused, naming
    what they need, and is not written."""
    from tests.imaging.disks.test_shrink import fill_home

    need_tools()
    image = tmp_path / "pc.img"
    helpers.make_gpt_disk(image, BIG_LAYOUT, BIG_MIB)
    with helpers.attached(image) as device:
        helpers.make_fs(helpers.node(device, 1), "ext4", "boot")
        pv = helpers.node(device, 2)
        lvm("pvcreate", "-y", pv, device=pv)
        lvm("vgcreate", "-s", "4M", VG, pv, device=pv)
        make_volumes(pv, tmp_path, BIG)
        with volume(pv, "root") as lv:
            helpers.make_fs(lv, "ext4", "root")
            root_files = helpers.put_files(lv, "ext4", tmp_path, 8 * MiB, 7)
        with volume(pv, "home") as lv:
            helpers.make_fs(lv, "xfs", "home")
            home_uuid = sh("blkid", "-p", "-o", "value", "-s", "UUID", lv).stdout.strip()
            with helpers.mounted_fs(lv, "xfs", tmp_path / "home") as root:
                fill_home(root, tmp_path)
                home = helpers.tree_metadata(root)
        with volume(pv, "swap") as lv:
            sh("mkswap", "-L", "swap", lv)
        ids = report(pv, "pvs", "pv_uuid,vg_uuid", pv)
        lv_ids = {r["lv_name"]: r["lv_uuid"] for r in report(pv, "lvs", "lv_name,lv_uuid", VG)}
        backup = backup_of(device, tmp_path)

    # Too small: the partition would hold 200 MiB, the LVs need more than 300 (xfs alone).
    small_mib = 1 + 48 + 200 + 2
    small = tmp_path / "small.img"
    helpers.garbage_file(small, small_mib * MiB)
    before = small.read_bytes()
    with helpers.attached(small) as target:
        capsys.readouterr()
        assert backup.cli("restore", "latest", target, "--yes") != 0
        err = capsys.readouterr().err
        assert "logical volumes need at least" in err and "home" in err, err
        refusal = err.strip().splitlines()
    assert small.read_bytes() == before, "a refused restore wrote to the disk"

    disk_mib = 1 + 48 + 460 + 2
    target_image = tmp_path / "smaller.img"
    helpers.garbage_file(target_image, disk_mib * MiB)
    with helpers.attached(target_image) as target:
        capsys.readouterr()
        started = time.monotonic()
        code = backup.cli("restore", "latest", target, "--yes")
        elapsed = time.monotonic() - started
        out = capsys.readouterr()
        assert code == 0, out.err
        assert "Partition 2 shrinks from" in out.out and "LVM physical volume" in out.out
        assert "made anew" in out.out and "shrunk with resize2fs" in out.out, out.out
        subprocess.run(["partx", "--update", target], check=False, capture_output=True)
        assert "No problems found" in sh("sgdisk", "--verify", target).stdout
        pv = helpers.node(target, 2)
        assert report(pv, "pvs", "pv_uuid,vg_uuid", pv) == ids
        assert {r["lv_name"]: r["lv_uuid"] for r in report(pv, "lvs", "lv_name,lv_uuid", VG)} == (
            lv_ids
        )
        layout = extents(pv)
        pv_extents = int(report(pv, "pvs", "pv_pe_count", pv)[0]["pv_pe_count"])
        assert pv_extents < 200 * 460 // 800 + 2, "the PV is the partition's size"
        assert layout["root"][0] == 0 and layout["home"][0] == layout["root"][1], "packed"
        assert layout["swap"] == (layout["home"][0] + layout["home"][1], 4), "swap moved whole"
        assert layout["home"][1] == 75, "xfs gives up the most it can: down to 300 MiB"
        assert layout["root"][1] < 60
        assert sum(n for _, n in layout.values()) <= pv_extents
        with volume(pv, "root") as lv:
            check = helpers.fsck(lv, "ext4")
            assert check.returncode == 0, check.stdout + check.stderr
            assert helpers.fs_size(lv, "ext4") <= layout["root"][1] * 4 * MiB
            assert helpers.read_files(lv, "ext4", tmp_path) == root_files
        with volume(pv, "home") as lv:
            check = helpers.fsck(lv, "xfs")
            assert check.returncode == 0, check.stdout + check.stderr
            assert sh("blkid", "-p", "-o", "value", "-s", "UUID", lv).stdout.strip() == home_uuid
            assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", lv).stdout.strip() == "home"
            with helpers.mounted_fs(lv, "xfs", tmp_path / "home-after", read_only=True) as root:
                assert helpers.tree_metadata(root) == home
        with volume(pv, "swap") as lv:
            assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", lv).stdout.strip() == "swap"
        boot = helpers.fsck(helpers.node(target, 1), "ext4")
        assert boot.returncode == 0, boot.stdout + boot.stderr
    with capsys.disabled():
        print(f"\n[lvm] restore of an {BIG_MIB} MiB disk to {disk_mib} MiB: {elapsed:.1f} s")
        print("\n".join(f"[lvm]   {line}" for line in out.out.splitlines()))
        print("\n".join(f"[lvm]   to {small_mib} MiB: {line}" for line in refusal))
