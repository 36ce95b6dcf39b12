"""`restore --new-ids`: a restored disk that can sit beside its original.

A Linux disk as Debian lays it out (BIOS boot, an ESP whose EFI/debian/grub.cfg finds the root
by UUID, an ext4 root naming everything by UUID and PARTUUID, swap, an xfs /home) and an LVM
PV, each restored with --new-ids to a second disk: every id is new except those something
outside the filesystems needs (each named), every reference inside the restored system names
a filesystem of the restored disk, and the tools' own checkers find nothing wrong."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imaging.disks import restore as disk_restore
from imaging.disks.identity import rewrite_references
from imaging.repository.store import Repository
from tests.imaging.disks import helpers, test_lvm
from tests.imaging.disks.conftest import Backup, SourceDisk, backup_of, need_tools
from tests.support import MiB, sh

pytestmark = [pytest.mark.integration, pytest.mark.root, pytest.mark.slow]

LAYOUT = [
    helpers.GptPart(1, "", 1, "ef02", name="BIOS boot"),
    helpers.GptPart(2, "vfat", 64, "ef00", "ESP", "EFI system"),
    helpers.GptPart(3, "ext4", 96, "8304", "root", "root"),
    helpers.GptPart(4, "swap", 32, "8200", "swap", "swap"),
    helpers.GptPart(5, "xfs", 300, "8302", "home", "home"),
]
DISK_MIB = 1 + sum(p.size_mib for p in LAYOUT) + 2
GRUB_BOOT_CODE = (
    b"\xeb\x63\x90" + bytes(0x180 - 3) + b"GRUB \x00Geom\x00Hard Disk\x00Read\x00 Error"
)


def blkid(dev: str, tag: str) -> str:
    return sh("blkid", "-p", "-o", "value", "-s", tag, dev).stdout.strip()


def ids_of(device: str) -> dict[str, str]:
    """Every id of the disk, as libblkid reads them from the partition nodes."""
    ids = {"disk": blkid(device, "PTUUID")}
    for p in LAYOUT:
        node = helpers.node(device, p.number)
        ids[f"p{p.number} PARTUUID"] = blkid(node, "PART_ENTRY_UUID")
        if p.fstype:
            ids[f"p{p.number} UUID"] = blkid(node, "UUID")
    return ids


SYSTEM_FILES = ("etc/fstab", "boot/grub/grub.cfg", "etc/initramfs-tools/conf.d/resume")


def system_files(ids: dict[str, str]) -> dict[str, str]:
    root, esp, swap = ids["p3 UUID"], ids["p2 UUID"], ids["p4 UUID"]
    return {
        "etc/fstab": (
            "# <file system> <mount point> <type> <options> <dump> <pass>\n"
            f"UUID={root} / ext4 errors=remount-ro 0 1\n"
            f"UUID={esp}  /boot/efi vfat umask=0077 0 1\n"
            f"PARTUUID={ids['p5 PARTUUID']} /home xfs defaults 0 2\n"
            f"/dev/disk/by-uuid/{swap} none swap sw 0 0\n"
            f"# a comment naming {root} is not a reference: UUIDs only after a marker\n"
        ),
        "boot/grub/grub.cfg": (
            "insmod part_gpt\ninsmod ext2\n"
            f"search --no-floppy --fs-uuid --set=root {root}\n"
            "menuentry 'Debian GNU/Linux' {\n"
            f"\tsearch --no-floppy --fs-uuid --set=root {root}\n"
            f"\tlinux /boot/vmlinuz-6.1.0-27-amd64 root=UUID={root} ro quiet\n"
            "\tinitrd /boot/initrd.img-6.1.0-27-amd64\n}\n"
        ),
        "etc/initramfs-tools/conf.d/resume": f"RESUME=UUID={swap}\n",
    }


def esp_grub_cfg(root: str) -> str:
    return (
        f"search.fs_uuid {root} root hd0,gpt3\n"
        "set prefix=($root)'/boot/grub'\nconfigfile $prefix/grub.cfg\n"
    )


@dataclass
class LinuxDisk:
    device: str
    ids: dict[str, str]
    files: dict[int, dict[str, str]]
    plain: Backup  # boot code of its own: no BIOS GRUB
    grub: Backup  # then GRUB's boot code in the MBR and /boot/grub/i386-pc on the root


def mtools(*argv: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(argv, check=True, capture_output=True, env=helpers.MTOOLS_ENV)


@pytest.fixture(scope="module")
def linux_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LinuxDisk]:
    need_tools()
    tmp = tmp_path_factory.mktemp("linux-disk")
    image = tmp / "linux.img"
    helpers.make_gpt_disk(image, LAYOUT, DISK_MIB)
    with helpers.attached(image) as device:
        helpers.write_bytes(helpers.node(device, 1), 0, bytes(range(256)) * 4096)
        files = {}
        for p in LAYOUT:
            dev = helpers.node(device, p.number)
            if p.fstype == "swap":
                sh("mkswap", "-L", p.label, dev)
            elif p.fstype:
                helpers.make_fs(dev, p.fstype, p.label)
                files[p.number] = helpers.put_files(dev, p.fstype, tmp, 6 * MiB, p.number)
        ids = ids_of(device)
        with helpers.mounted_fs(helpers.node(device, 3), "ext4", tmp / "root") as root:
            for name, text in system_files(ids).items():
                (root / name).parent.mkdir(parents=True, exist_ok=True)
                (root / name).write_text(text)
            (root / "etc" / "crypttab").write_text("# <target name> <source device>\n")
            (root / "etc" / "fstab").chmod(0o640)
            sh("chown", "123:45", root / "etc" / "fstab")
            os.setxattr(root / "etc" / "fstab", "user.hourglass", b"kept")
        cfg = tmp / "grub.cfg"
        cfg.write_text(esp_grub_cfg(ids["p3 UUID"]))
        esp = helpers.node(device, 2)
        mtools("mmd", "-i", esp, "::/EFI", "::/EFI/debian")
        mtools("mcopy", "-i", esp, str(cfg), "::/EFI/debian/grub.cfg")
        files = {
            p.number: helpers.read_files(helpers.node(device, p.number), p.fstype, tmp)
            for p in LAYOUT
            if p.fstype not in ("", "swap")
        }
        plain = backup_of(device, tmp / "plain")
        helpers.write_bytes(device, 0, GRUB_BOOT_CODE)
        with helpers.mounted_fs(helpers.node(device, 3), "ext4", tmp / "root") as root:
            (root / "boot" / "grub" / "i386-pc").mkdir()
        grub = backup_of(device, tmp / "grub")
        yield LinuxDisk(device, ids, files, plain, grub)


def read_esp_cfg(esp: str, tmp: Path) -> str:
    out = tmp / "esp-grub.cfg"
    out.unlink(missing_ok=True)
    mtools("mcopy", "-n", "-i", esp, "::/EFI/debian/grub.cfg", str(out))
    return out.read_text()


def test_a_linux_disk_gets_new_ids_and_its_references_follow(
    linux_disk: LinuxDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target_image = tmp_path / "new.img"
    helpers.garbage_file(target_image, DISK_MIB * MiB)
    with helpers.attached(target_image) as target:
        started = time.monotonic()
        code = linux_disk.plain.cli("restore", "latest", target, "--yes", "--new-ids")
        took = time.monotonic() - started
        out = capsys.readouterr().out
        assert code == 0, out
        new = ids_of(target)
        for key, old in linux_disk.ids.items():
            assert new[key] and new[key].lower() != old.lower(), f"{key} kept: {old}"
        assert "Kept id" not in out
        assert "partition 3: /etc/fstab (4)" in out, out
        assert "partition 3: /boot/grub/grub.cfg (3)" in out, out
        # mtools made the directory with an 8.3 name only, which fusefat shows in capitals
        assert "partition 2: /efi/debian/grub.cfg (1)" in out.lower(), out
        assert "partition 3: /etc/initramfs-tools/conf.d/resume (1)" in out, out

        check = sh("sgdisk", "-v", target)
        assert "No problems found" in check.stdout, check.stdout
        for p in LAYOUT:
            if p.fstype in ("", "swap"):
                continue
            dev = helpers.node(target, p.number)
            result = helpers.fsck(dev, p.fstype)
            assert result.returncode == 0, f"{p.fstype}: {result.stdout}{result.stderr}"
            files = helpers.read_files(dev, p.fstype, tmp_path)
            assert files.keys() == linux_disk.files[p.number].keys()
            for name, digest in files.items():  # those with references are compared below
                if name not in (*SYSTEM_FILES, "EFI/debian/grub.cfg"):
                    assert digest == linux_disk.files[p.number][name], name
        assert blkid(helpers.node(target, 4), "TYPE") == "swap"
        assert blkid(helpers.node(target, 4), "LABEL") == "swap"

        # every reference names the new ids, and each resolves to a filesystem of this disk
        with helpers.mounted_fs(helpers.node(target, 3), "ext4", tmp_path / "root") as root:
            for name, text in system_files(new).items():
                assert (root / name).read_text() == text.replace(
                    f"naming {new['p3 UUID']}", f"naming {linux_disk.ids['p3 UUID']}"
                ), name
            st = (root / "etc" / "fstab").stat()
            assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o640, 123, 45)
            assert os.getxattr(root / "etc" / "fstab", "user.hourglass") == b"kept"
            names = sh("grep", "-rhoE", "(UUID=|by-uuid/)[^ ]+", root / "etc", root / "boot")
        assert read_esp_cfg(helpers.node(target, 2), tmp_path) == esp_grub_cfg(new["p3 UUID"])
        on_disk = {v.lower() for v in new.values()}
        for ref in names.stdout.split():
            value = ref.rsplit("=", 1)[-1].rsplit("/", 1)[-1].lower()
            assert value in on_disk, f"{ref} names nothing on the restored disk"
    with capsys.disabled():
        print(f"\n[new-ids] Linux disk of {DISK_MIB} MiB restored with --new-ids in {took:.1f} s")


def test_bios_grub_keeps_the_uuid_its_core_image_names(
    linux_disk: LinuxDisk, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target_image = tmp_path / "new.img"
    helpers.garbage_file(target_image, DISK_MIB * MiB)
    backup = linux_disk.grub
    with helpers.attached(target_image) as target:
        started = time.monotonic()
        result = disk_restore.restore_disk(backup.repo, backup.snapshot, target, new_ids=True)
        took = time.monotonic() - started
        assert isinstance(result, disk_restore.DiskRestoreResult)
        assert result.verified
        new = ids_of(target)
        assert new["p3 UUID"] == linux_disk.ids["p3 UUID"]
        assert len(result.kept_ids) == 1 and "partition 3: ext4 UUID" in result.kept_ids[0]
        assert "BIOS GRUB" in result.kept_ids[0]
        for key, old in linux_disk.ids.items():
            if key != "p3 UUID":
                assert new[key].lower() != old.lower(), f"{key} kept: {old}"
        assert helpers.fsck(helpers.node(target, 3), "ext4").returncode == 0
        with helpers.mounted_fs(helpers.node(target, 3), "ext4", tmp_path / "root") as root:
            fstab = (root / "etc" / "fstab").read_text()
        assert f"UUID={new['p3 UUID']} / ext4" in fstab
        assert f"UUID={new['p2 UUID']} " in fstab and new["p5 PARTUUID"] in fstab
    with capsys.disabled():
        print(f"\n[new-ids] the same disk with BIOS GRUB restored with --new-ids in {took:.1f} s")


def test_only_references_are_rewritten() -> None:
    old, new = "0b1f8e6c-3f4a-4f0e-9a53-5c1c2a0d7e11", "9d1c54e2-62a8-4c2f-b3de-2a4f8e21c0aa"
    text = f"UUID={old.upper()} / ext4\n# {old}\n{old}x UUID={old}0\nsearch.fs_uuid {old} root\n"
    changed, n = rewrite_references(text, {old: new})
    assert n == 2
    assert changed == f"UUID={new} / ext4\n# {old}\n{old}x UUID={old}0\nsearch.fs_uuid {new} root\n"


def lvm_fstab(uuids: dict[str, str]) -> str:
    return (
        f"UUID={uuids['root']} / ext4 defaults 0 1\n"
        f"UUID={uuids['boot']} /boot ext4 defaults 0 2\n"
        f"/dev/disk/by-uuid/{uuids['home']} /home xfs defaults 0 2\n"
        f"UUID={uuids['swap']} none swap sw 0 0\n"
    )


def test_a_physical_volume_gets_new_pv_and_vg_uuids(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    need_tools()
    lvm, VG, VOLUMES = test_lvm.lvm, test_lvm.VG, test_lvm.VOLUMES
    image = tmp_path / "pc.img"
    helpers.make_gpt_disk(image, test_lvm.LAYOUT, test_lvm.DISK_MIB)
    with helpers.attached(image) as device:
        helpers.make_fs(helpers.node(device, 1), "ext4", "boot")
        pv = helpers.node(device, 2)
        lvm("pvcreate", "-y", pv, device=pv)
        lvm("vgcreate", "-s", "4M", VG, pv, device=pv)
        test_lvm.make_volumes(pv, tmp_path)
        files, uuids = {}, {}
        for name, (_, _, fstype) in VOLUMES.items():
            with test_lvm.volume(pv, name) as lv:
                if fstype:
                    helpers.make_fs(lv, fstype, name)
                    files[name] = helpers.put_files(lv, fstype, tmp_path, 4 * MiB, len(files))
                else:
                    sh("mkswap", "-L", name, lv)
                uuids[name] = blkid(lv, "UUID")
        uuids["boot"] = blkid(helpers.node(device, 1), "UUID")
        with test_lvm.volume(pv, "root") as lv, helpers.mounted_fs(lv, "ext4", tmp_path / "r") as r:
            (r / "etc").mkdir()
            (r / "etc" / "fstab").write_text(lvm_fstab(uuids))
        ids_before = lvm("pvs", "-o", "pv_uuid,vg_uuid", "--noheadings", pv, device=pv).split()
        lvs_before = lvm("lvs", "-o", "lv_name,lv_uuid,lv_size", "--noheadings", VG, device=pv)
        backup = backup_of(device, tmp_path)
    snapshot = Repository.open(backup.repo.path, backup.passphrase_file.read_text()).snapshots()[-1]
    assert snapshot.image("p2").method == "lvm"

    target_image = tmp_path / "new.img"
    helpers.garbage_file(target_image, test_lvm.DISK_MIB * MiB)
    with helpers.attached(target_image) as target:
        started = time.monotonic()
        assert backup.cli("restore", "latest", target, "--yes", "--new-ids") == 0
        took = time.monotonic() - started
        out = capsys.readouterr().out
        pv = helpers.node(target, 2)
        pv_uuid, vg_uuid = lvm(
            "pvs", "-o", "pv_uuid,vg_uuid", "--noheadings", pv, device=pv
        ).split()
        assert pv_uuid != ids_before[0] and vg_uuid != ids_before[1]
        vgs = lvm("vgs", "-o", "vg_name,vg_uuid,lv_count", "--noheadings", device=pv).split()
        assert vgs == [VG, vg_uuid, str(len(VOLUMES))], "the VG keeps its name and its LVs"
        assert lvm("lvs", "-o", "lv_name,lv_uuid,lv_size", "--noheadings", VG, device=pv) == (
            lvs_before
        )
        assert f"LVM PV UUID {ids_before[0]} -> {pv_uuid}" in out, out
        assert "logical volume hgtestvg/root (partition 2): /etc/fstab (4)" in out, out
        now = {"boot": blkid(helpers.node(target, 1), "UUID")}
        for name, (_, _, fstype) in VOLUMES.items():
            with test_lvm.volume(pv, name) as lv:
                now[name] = blkid(lv, "UUID")
                assert now[name] not in ("", uuids[name]), f"{name} keeps its UUID"
                if name == "root":
                    with helpers.mounted_fs(lv, "ext4", tmp_path / "r", read_only=True) as r:
                        fstab = (r / "etc" / "fstab").read_text()
                if not fstype:
                    assert blkid(lv, "LABEL") == name
                    continue
                check = helpers.fsck(lv, fstype)
                assert check.returncode == 0, check.stdout + check.stderr
                found = helpers.read_files(lv, fstype, tmp_path)
                found.pop("etc/fstab", None)
                assert found == files[name]
        assert fstab == lvm_fstab(now), "the root LV's fstab names the new UUIDs"
    with capsys.disabled():
        print(
            f"\n[new-ids] LVM disk of {test_lvm.DISK_MIB} MiB restored with --new-ids in {took:.1f} s"
        )


def test_a_windows_disk_keeps_its_table_ids_and_ntfs_serial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A dual boot whose ESP holds Windows' boot manager: BCD names the disk and partitions by
    GUID, so the table's ids and the NTFS serial are kept (and said); the ESP and the Linux
    root get new UUIDs; a LUKS volume keeps its UUID (the initramfs names it)."""
    need_tools()
    layout = [
        helpers.GptPart(1, "vfat", 64, "ef00", "ESP", "EFI system partition"),
        helpers.GptPart(2, "ntfs", 64, "0700", "Windows", "Basic data partition"),
        helpers.GptPart(3, "ext4", 48, "8304", "root", "root"),
        helpers.GptPart(4, "", 24, "8309", name="Linux LUKS"),
    ]
    mib = 1 + sum(p.size_mib for p in layout) + 2
    image = tmp_path / "dual.img"
    helpers.make_gpt_disk(image, layout, mib)
    with helpers.attached(image) as device:
        helpers.make_filesystems(device, layout, tmp_path, 2 * MiB)
        esp = helpers.node(device, 1)
        boot = tmp_path / "bootmgfw.efi"
        boot.write_bytes(b"MZ" + bytes(4094))
        mtools("mmd", "-i", esp, "::/EFI", "::/EFI/Microsoft", "::/EFI/Microsoft/Boot")
        mtools("mcopy", "-i", esp, str(boot), "::/EFI/Microsoft/Boot/bootmgfw.efi")
        luks = helpers.node(device, 4)
        key = tmp_path / "key"
        key.write_bytes(b"not a secret")
        sh("cryptsetup", "luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2",
           "--pbkdf-force-iterations", "1000", "--key-file", key, luks)  # fmt: skip
        before = {n: blkid(helpers.node(device, n), "UUID") for n in (1, 2, 3, 4)}
        parts = {n: blkid(helpers.node(device, n), "PART_ENTRY_UUID") for n in (1, 2, 3, 4)}
        disk_id = blkid(device, "PTUUID")
        backup = backup_of(device, tmp_path)
    target_image = tmp_path / "new.img"
    helpers.garbage_file(target_image, mib * MiB)
    with helpers.attached(target_image) as target:
        started = time.monotonic()
        result = disk_restore.restore_disk(backup.repo, backup.snapshot, target, new_ids=True)
        took = time.monotonic() - started
        assert isinstance(result, disk_restore.DiskRestoreResult)
        assert blkid(target, "PTUUID") == disk_id
        for n in (1, 2, 3, 4):
            assert blkid(helpers.node(target, n), "PART_ENTRY_UUID") == parts[n]
        assert blkid(helpers.node(target, 4), "UUID") == before[4]
        assert blkid(helpers.node(target, 2), "UUID") == before[2]
        assert blkid(helpers.node(target, 1), "UUID") != before[1]
        assert blkid(helpers.node(target, 3), "UUID") != before[3]
        assert len(result.kept_ids) == 3, result.kept_ids
        assert "EFI/Microsoft/Boot" in result.kept_ids[0] and "BCD" in result.kept_ids[0]
        assert result.kept_ids[1].startswith(f"partition 2: ntfs UUID {before[2]}")
        assert result.kept_ids[2].startswith(f"partition 4: crypto_LUKS UUID {before[4]}")
        assert "initramfs" in result.kept_ids[2]
        assert helpers.fsck(helpers.node(target, 2), "ntfs").returncode == 0
    with capsys.disabled():
        print(f"\n[new-ids] Windows dual boot of {mib} MiB restored with --new-ids in {took:.1f} s")


def test_an_mbr_disk_gets_a_new_signature(
    mbr_source: SourceDisk, mbr_backup: Backup, tmp_path: Path
) -> None:
    target_image = tmp_path / "mbr-new.img"
    helpers.garbage_file(target_image, helpers.MBR_DISK_MIB * MiB)
    with helpers.attached(target_image) as target:
        assert mbr_backup.cli("restore", "latest", target, "--yes", "--new-ids") == 0
        old_sig, new_sig = blkid(mbr_source.device, "PTUUID"), blkid(target, "PTUUID")
        assert old_sig == f"{helpers.MBR_SIGNATURE:08x}" and new_sig != old_sig
        for p in mbr_source.parts:
            dev, source = helpers.node(target, p.number), helpers.node(mbr_source.device, p.number)
            assert blkid(dev, "PART_ENTRY_UUID") == f"{new_sig}-{p.number:02x}"
            assert blkid(dev, "UUID") not in ("", blkid(source, "UUID"))
            check = helpers.fsck(dev, p.fstype)
            assert check.returncode == 0, f"{p.fstype}: {check.stdout}{check.stderr}"
            assert helpers.read_files(dev, p.fstype, tmp_path) == p.files
        assert helpers.read_bytes(target, 0, 440) == helpers.read_bytes(mbr_source.device, 0, 440)


def test_a_btrfs_root_in_a_subvolume(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Debian's installer puts a btrfs root in the subvolume @: its fstab is found there."""
    need_tools()
    layout = [helpers.GptPart(1, "btrfs", 128, "8304", "root", "root")]
    mib = 1 + 128 + 2
    image = tmp_path / "btrfs.img"
    helpers.make_gpt_disk(image, layout, mib)
    with helpers.attached(image) as device:
        dev = helpers.node(device, 1)
        helpers.make_fs(dev, "btrfs", "root")
        old = blkid(dev, "UUID")
        with helpers.mounted_fs(dev, "btrfs", tmp_path / "top") as top:
            sh("btrfs", "subvolume", "create", top / "@")
            (top / "@" / "etc").mkdir()
            (top / "@" / "etc" / "fstab").write_text(f"UUID={old} / btrfs subvol=@ 0 0\n")
        backup = backup_of(device, tmp_path)
    target_image = tmp_path / "new.img"
    helpers.garbage_file(target_image, mib * MiB)
    with helpers.attached(target_image) as target:
        started = time.monotonic()
        assert backup.cli("restore", "latest", target, "--yes", "--new-ids") == 0
        took = time.monotonic() - started
        assert "partition 1: /@/etc/fstab (1)" in capsys.readouterr().out
        dev = helpers.node(target, 1)
        new = blkid(dev, "UUID")
        assert new not in ("", old)
        assert helpers.fsck(dev, "btrfs").returncode == 0
        with helpers.mounted_fs(dev, "btrfs", tmp_path / "top", read_only=True) as top:
            assert (top / "@" / "etc" / "fstab").read_text() == f"UUID={new} / btrfs subvol=@ 0 0\n"
    with capsys.disabled():
        print(f"\n[new-ids] btrfs root of {mib} MiB restored with --new-ids in {took:.1f} s")
