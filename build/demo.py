"""`make run`: demo disks and a QEMU boot with the serial console in this terminal.

The demo PC disk is a GPT disk image with an EFI-style FAT partition and an ext4 partition
holding real files; the backup disk is empty. Both are made from files, without loop
devices or root: ``mke2fs -d`` fills ext4 from a folder and mtools fill FAT.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

from build.context import Context
from build.errors import BuildError
from imaging.process import run, spawn, which

log = logging.getLogger("build")

MiB = 1024 * 1024
DEMO_PC_MIB = 320
BACKUP_MIB = 4096


def demo_dir(ctx: Context) -> Path:
    return ctx.work / "demo"


def make_demo_disks(ctx: Context) -> tuple[Path, Path]:
    """The demo PC disk (made once) and an empty backup disk (made once)."""
    directory = demo_dir(ctx)
    directory.mkdir(parents=True, exist_ok=True)
    pc = directory / "demo-pc.img"
    backup = directory / "backup.img"
    if not pc.exists():
        make_demo_pc_disk(directory, pc)
    if not backup.exists():
        with backup.open("wb") as f:
            f.truncate(BACKUP_MIB * MiB)
    return pc, backup


def make_demo_pc_disk(directory: Path, image: Path) -> None:
    """GPT: 1 = FAT "EFI" 32 MiB with a few files, 2 = ext4 with real files from /usr."""
    log.info("==> make_demo_pc_disk %s", image)
    esp_mib, first_mib = 32, 1
    root_mib = DEMO_PC_MIB - esp_mib - first_mib - 1
    files = directory / "demo-files"
    if files.exists():
        shutil.rmtree(files)
    home = files / "home" / "demo"
    (home / "Documents").mkdir(parents=True)
    (home / "Documents" / "notes.txt").write_text(
        "Hourglass demo disk.\nBack this partition up, change a file, back up again,\n"
        "then restore the first version.\n"
    )
    (home / "Documents" / "中文笔记.txt").write_text("这是一个演示文件。\n")
    for source in sorted(Path("/usr/share/common-licenses").glob("*"))[:20]:
        if source.is_file():
            shutil.copyfile(source, home / "Documents" / source.name)
    photos = home / "Pictures"
    photos.mkdir()
    for index, source in enumerate(sorted(Path("/usr/share/pixmaps").glob("*"))[:20]):
        if source.is_file():
            shutil.copyfile(source, photos / f"{index:02d}-{source.name}")
    etc = files / "etc"
    etc.mkdir()
    (etc / "hostname").write_text("demo-pc\n")
    ext4 = directory / "part-root.img"
    ext4.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "demo-root", "-d", files, ext4, f"{root_mib}M"])
    fat = directory / "part-efi.img"
    fat.unlink(missing_ok=True)
    run(["mkfs.vfat", "-C", "-n", "DEMO-EFI", fat, str(esp_mib * 1024)])
    run(["mmd", "-i", fat, "::/EFI", "::/EFI/demo"])
    readme = directory / "efi-readme.txt"
    readme.write_text("Files on the demo PC's EFI partition.\n")
    run(["mcopy", "-i", fat, readme, "::/EFI/demo/README.TXT"])
    with image.open("wb") as f:
        f.truncate(DEMO_PC_MIB * MiB)
    run(
        [
            "sgdisk",
            f"--new=1:{first_mib}M:+{esp_mib}M",
            "--typecode=1:EF00",
            "--change-name=1:EFI",
            f"--new=2:0:+{root_mib}M",
            "--typecode=2:8300",
            "--change-name=2:demo-root",
            image,
        ]
    )
    with image.open("r+b") as disk:
        for part, offset in ((fat, first_mib * MiB), (ext4, (first_mib + esp_mib) * MiB)):
            disk.seek(offset)
            with part.open("rb") as src:
                shutil.copyfileobj(src, disk, 4 * MiB)
    fat.unlink()
    ext4.unlink()
    shutil.rmtree(files)


def terminal_size() -> tuple[int, int]:
    """The size of the terminal this runs in, even when stdout is a pipe (make | tee)."""
    for fd in (sys.stdin.fileno(), sys.stderr.fileno(), sys.stdout.fileno()):
        try:
            size = os.get_terminal_size(fd)
        except OSError:
            continue
        return size.columns, size.lines
    return 80, 24


def run_appliance(ctx: Context) -> int:
    """Boot the built appliance with the demo disks; the serial console is this terminal."""
    for needed in (ctx.kernel, ctx.initrd, ctx.iso):
        if not needed.exists():
            raise BuildError(f"{needed} is missing.", "Build the appliance first: make image.")
    pc, backup = make_demo_disks(ctx)
    columns, rows = terminal_size()
    append = (
        f"boot=live quiet loglevel=3 console=tty0 console=ttyS0,115200n8 "
        f"hourglass.size={columns}x{rows - 1}"
    )
    argv = [
        which("qemu-system-x86_64"),
        "-accel",
        "tcg",
        "-machine",
        "q35",
        "-cpu",
        "max",
        "-smp",
        "2",
        "-m",
        "3072",
        "-display",
        "none",
        "-vga",
        "std",
        "-serial",
        "mon:stdio",
        "-kernel",
        ctx.kernel,
        "-initrd",
        ctx.initrd,
        "-append",
        append,
        "-drive",
        f"if=none,id=cd,format=raw,media=cdrom,readonly=on,file={ctx.iso}",
        "-device",
        "ide-cd,drive=cd",
        "-drive",
        f"if=none,id=pc,format=raw,file={pc}",
        "-device",
        "virtio-blk-pci,drive=pc,serial=DEMO-PC-0001",
        "-drive",
        f"if=none,id=backup,format=raw,file={backup}",
        "-device",
        "virtio-blk-pci,drive=backup,serial=DEMO-BACKUP-0001",
        "-netdev",
        "user,id=net0",
        "-device",
        "virtio-net-pci,netdev=net0",
    ]
    print(
        f"Booting {ctx.vendor.name} {ctx.version} in QEMU (software emulation: about two "
        "minutes).\n"
        f"Disks: demo PC = vda ({DEMO_PC_MIB} MiB: FAT and ext4 with files), "
        f"empty backup disk = vdb ({BACKUP_MIB // 1024} GiB).\n"
        "This terminal is the appliance's serial console: the app appears here.\n"
        "Quit QEMU: Ctrl-a x (Ctrl-a c: QEMU monitor).\n",
        file=sys.stderr,
    )
    os.environ.pop("HOURGLASS_PASSPHRASE", None)
    return spawn([str(a) for a in argv]).wait()
