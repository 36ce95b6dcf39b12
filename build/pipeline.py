"""The appliance recipe: named steps run in order on one :class:`Context` (mkosi style).

check_host(ctx)          root, tools, boot loaders
bootstrap_rootfs(ctx)    the Debian mirror reachable? mmdebstrap -> cached base root tarball
build_wheels(ctx)        the app and its dependencies as wheels, built on this host
install_app(ctx)         base root + venv /opt/hourglass from those wheels
configure_root(ctx)      overlay (units, network, consoles) and vendor settings
make_squashfs(ctx)       the root image, kernel and initrd
make_iso(ctx)            hybrid ISO: BIOS (ISOLINUX), UEFI and Secure Boot (shim, GRUB)
make_pxe_bundle(ctx)     PXELINUX, GRUB netboot with shim, iPXE, README
write_checksums(ctx)     SHA256SUMS
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from string import Template

from build import bootmenu
from build.context import COMPONENTS, SUITE, Context
from build.errors import BuildError, ImageTooLarge, MirrorUnreachable, NotRoot
from build.steps import After, run_steps, step
from build.vendor import Vendor, render_vendor
from imaging.errors import ToolMissing
from imaging.process import run, spawn, which

log = logging.getLogger("build")

MiB = 1024 * 1024
ISO_LIMIT = 450 * MiB
# In the root's etc/hourglass when the vendor file orders an unattended action.
UNATTENDED_MARKER = "unattended-by-vendor"
# The code of the cheap output steps is one of their inputs (a change rebuilds them).
BUILD_CODE = (Path(__file__), Path(bootmenu.__file__))
# Bump when the bootstrap recipe below changes in a way the inputs do not show.
BOOTSTRAP_RECIPE = 1

# Host files the build copies into its outputs, and the Debian package of each.
BOOT_FILES = {
    "isolinux.bin": (Path("/usr/lib/ISOLINUX/isolinux.bin"), "isolinux"),
    "isohdpfx.bin": (Path("/usr/lib/ISOLINUX/isohdpfx.bin"), "isolinux"),
    "pxelinux.0": (Path("/usr/lib/PXELINUX/pxelinux.0"), "pxelinux"),
    "ldlinux.c32": (Path("/usr/lib/syslinux/modules/bios/ldlinux.c32"), "syslinux-common"),
    "menu.c32": (Path("/usr/lib/syslinux/modules/bios/menu.c32"), "syslinux-common"),
    "libutil.c32": (Path("/usr/lib/syslinux/modules/bios/libutil.c32"), "syslinux-common"),
    "libcom32.c32": (Path("/usr/lib/syslinux/modules/bios/libcom32.c32"), "syslinux-common"),
    "shimx64.efi": (Path("/usr/lib/shim/shimx64.efi.signed"), "shim-signed"),
    "mmx64.efi": (Path("/usr/lib/shim/mmx64.efi.signed"), "shim-helpers-amd64-signed"),
    "gcdx64.efi": (
        Path("/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed"),
        "grub-efi-amd64-signed",
    ),
    "grubx64.efi": (
        Path("/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"),
        "grub-efi-amd64-signed",
    ),
    "grubnetx64.efi": (
        Path("/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"),
        "grub-efi-amd64-signed",
    ),
}
HOST_TOOLS = ("mmdebstrap", "xorriso", "mksquashfs", "mkfs.vfat", "mcopy", "mmd", "tar", "chroot")

# dpkg leaves these out of the root: documentation, manuals and unneeded translations.
DPKG_FILTERS = (
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/info/*",
    "path-exclude=/usr/share/groff/*",
    "path-exclude=/usr/share/lintian/*",
    "path-exclude=/usr/share/linda/*",
    "path-exclude=/usr/share/bug/*",
    "path-exclude=/usr/share/locale/*",
    "path-include=/usr/share/locale/locale.alias",
    "path-include=/usr/share/locale/zh_CN/*",
)

# Systemd units the appliance does without: periodic jobs and daemons that slow the boot.
MASKED_UNITS = (
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "smartmontools.service",
    "systemd-networkd-wait-online.service",
    "getty@tty1.service",
    "kmsconvt@tty1.service",  # Debian's kmscon login on tty1: tty1 is the app's
    "serial-getty@ttyS0.service",
    "rpcbind.service",
    "rpcbind.socket",
    "mdmonitor.service",
    "mdcheck_start.timer",
    "mdcheck_continue.timer",
    "mdmonitor-oneshot.timer",
    "lvm2-monitor.service",
)
ENABLED_UNITS = (
    "hourglass-console.service",
    "hourglass-serial.service",
    "hourglass-boot-report.service",
    "hourglass-unattended.service",
    "systemd-networkd.service",
    "systemd-resolved.service",
    "getty@tty2.service",
)


def build_image(ctx: Context, until: str | None = None) -> None:
    """The whole recipe, in order; unchanged steps are skipped."""
    run_steps(
        ctx,
        until,
        [
            check_host,
            bootstrap_rootfs,
            build_wheels,
            install_app,
            configure_root,
            make_squashfs,
            make_iso,
            make_pxe_bundle,
            write_checksums,
        ],
    )


# --- inputs -----------------------------------------------------------------------------


def packages(ctx: Context) -> list[str]:
    """The root's package list: image/packages.txt plus the vendor's extra packages."""
    names = []
    for raw in (ctx.image / "packages.txt").read_text().splitlines():
        name = raw.split("#", 1)[0].strip()
        if name:
            names.append(name)
    return sorted({*names, *ctx.vendor.packages})


def base_tarball(ctx: Context) -> Path:
    return ctx.cache / f"rootfs-{ctx.keys['bootstrap_rootfs']}.tar"


def app_sources(ctx: Context) -> list[Path]:
    # README.md is the package's long description (in the wheel's METADATA).
    return [ctx.repository / p for p in ("pyproject.toml", "README.md", "imaging", "recovery_ui")]


# --- steps ------------------------------------------------------------------------------


def check_host(ctx: Context) -> None:
    """Refuse early, with the Debian package to install, rather than fail half-way."""
    log.info("==> check_host")
    if os.geteuid() != 0:
        raise NotRoot(
            "The appliance build must run as root (mmdebstrap, chroot and device nodes).",
            "Run it as root, e.g. sudo make image.",
        )
    for tool in HOST_TOOLS:
        which(tool)
    for path, package in BOOT_FILES.values():
        if not path.exists():
            raise ToolMissing(f"{path} not found.", f"Install it with: apt install {package}")


def check_mirror(ctx: Context) -> None:
    """A clear error when the Debian mirror cannot be reached, before anything is built."""
    url = f"{ctx.mirror}/dists/{SUITE}/InRelease"
    if not url.startswith(("http://", "https://")):
        raise MirrorUnreachable(f"The mirror {ctx.mirror} is not an http:// or https:// address.")
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 (checked above)
    try:
        with urllib.request.urlopen(request, timeout=20):  # noqa: S310
            pass
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise MirrorUnreachable(
            f"The Debian mirror {ctx.mirror} cannot be reached ({reason}).",
            "The base root is built from it the first time; check the network or set "
            "MIRROR=http://your-mirror/debian. Nothing was built.",
        ) from e


@step(
    inputs=lambda ctx: [
        str(BOOTSTRAP_RECIPE),
        ctx.mirror,
        ctx.security_mirror,
        SUITE,
        " ".join(packages(ctx)),
        " ".join(DPKG_FILTERS),
        ctx.image / "bootstrap",
    ],
    outputs=lambda ctx: [base_tarball(ctx)],
    keyed_outputs=True,
)
def bootstrap_rootfs(ctx: Context) -> None:
    """Debian 12 minbase with the package list, as a tarball cached by its inputs."""
    check_mirror(ctx)
    ctx.cache.mkdir(parents=True, exist_ok=True)
    target = base_tarball(ctx)
    partial = target.with_suffix(".partial.tar")
    partial.unlink(missing_ok=True)
    components = " ".join(COMPONENTS)
    argv = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=tar",
        "--include=" + ",".join(packages(ctx)),
        *[f"--dpkgopt={f}" for f in DPKG_FILTERS],
        '--aptopt=Acquire::Retries "3"',
        f"--setup-hook=sync-in {ctx.image / 'bootstrap' / 'setup'} /",
        f"--customize-hook={ctx.image / 'bootstrap' / 'customize.sh'}",
        SUITE,
        str(partial),
        f"deb {ctx.mirror} {SUITE} {components}",
        f"deb {ctx.mirror} {SUITE}-updates {components}",
        f"deb {ctx.security_mirror} {SUITE}-security {components}",
    ]
    logfile = ctx.work / "mmdebstrap.log"
    log.info("    mmdebstrap: %d packages (log: %s)", len(packages(ctx)), logfile)
    with logfile.open("wb") as out:
        returncode = spawn(
            argv, stdout=out.fileno(), stderr=subprocess.STDOUT, env=ctx.environment()
        ).wait()
    if returncode != 0:
        partial.unlink(missing_ok=True)
        tail = logfile.read_text(errors="replace").strip().splitlines()[-15:]
        raise BuildError(
            f"mmdebstrap failed with exit code {returncode}:\n" + "\n".join(tail),
            f"The whole log is in {logfile}. Nothing was built.",
        )
    partial.rename(target)
    # Keep the two newest bases (say, the default and one vendor's), drop older ones.
    bases = sorted(ctx.cache.glob("rootfs-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in bases[2:]:
        old.unlink()


@step(
    inputs=app_sources,
    outputs=lambda ctx: [ctx.wheels],
)
def build_wheels(ctx: Context) -> None:
    """Wheels of the app and its dependencies, built here (Debian 12, CPython 3.11)."""
    ctx.wheels.mkdir(parents=True, exist_ok=True)
    # setuptools writes build/lib and *.egg-info next to the sources: build from a copy, so
    # nothing lands in the repository (least of all in build/, which is this package).
    source = ctx.work / "app-source"
    if source.exists():
        shutil.rmtree(source)
    source.mkdir(parents=True)
    for path in app_sources(ctx):
        if path.is_dir():
            shutil.copytree(path, source / path.name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / path.name)
    pyproject = (ctx.repository / "pyproject.toml").read_bytes()
    deps_key = hashlib.sha256(pyproject).hexdigest()
    deps_stamp = ctx.wheels / ".dependencies"
    for old in ctx.wheels.glob("hourglass-*.whl"):
        old.unlink()
    pip: list[str | Path] = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--wheel-dir",
        ctx.wheels,
    ]
    if not deps_stamp.exists() or deps_stamp.read_text() != deps_key:
        run([*pip, source], env=ctx.environment())
        deps_stamp.write_text(deps_key)
    else:
        run([*pip, "--no-deps", source], env=ctx.environment())
    shutil.rmtree(source)


@step(
    inputs=lambda ctx: [After("bootstrap_rootfs"), After("build_wheels"), ctx.wheels],
    outputs=lambda ctx: [ctx.root / "opt" / "hourglass" / "bin" / "hourglass"],
)
def install_app(ctx: Context) -> None:
    """A fresh copy of the base root with the app in a venv at /opt/hourglass."""
    if ctx.root.exists():
        shutil.rmtree(ctx.root)
    ctx.root.mkdir(parents=True)
    run(["tar", "--numeric-owner", "--xattrs", "-xpf", base_tarball(ctx), "-C", ctx.root])
    staged = ctx.root / "tmp" / "hourglass-wheels"
    shutil.copytree(ctx.wheels, staged)
    env = {**ctx.environment(), "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    run(["chroot", ctx.root, "python3", "-m", "venv", "/opt/hourglass"], env=env)
    run(
        [
            "chroot",
            ctx.root,
            "/opt/hourglass/bin/pip",
            "install",
            "--no-index",
            "--no-cache-dir",
            "--find-links",
            "/tmp/hourglass-wheels",  # noqa: S108 (inside the image root, not this host)
            "hourglass",
        ],
        env=env,
    )
    # The appliance never installs anything at run time.
    run(
        [
            "chroot",
            ctx.root,
            "/opt/hourglass/bin/pip",
            "uninstall",
            "-y",
            "-q",
            "pip",
            "setuptools",
        ],
        env=env,
    )
    shutil.rmtree(staged)
    link = ctx.root / "usr" / "local" / "bin" / "hourglass"
    link.unlink(missing_ok=True)
    link.symlink_to("/opt/hourglass/bin/hourglass")


def write_unattended_marker(etc: Path, vendor: Vendor) -> None:
    """``etc/unattended-by-vendor`` exactly when the vendor orders an unattended action:
    hourglass-unattended.service starts on it (systemd conditions cannot read TOML)."""
    marker = etc / UNATTENDED_MARKER
    if vendor.unattended_action == "none":
        marker.unlink(missing_ok=True)  # a root configured before for another vendor
    else:
        marker.write_text(f"{vendor.unattended_action}\n")


@step(
    inputs=lambda ctx: [
        After("install_app"),
        ctx.image / "overlay",
        render_vendor(ctx.vendor),
        *[p for p, _ in ctx.vendor.extra_files()],
        " ".join(d for _, d in ctx.vendor.extra_files()),
        " ".join(MASKED_UNITS + ENABLED_UNITS),
        ctx.version,
    ],
    outputs=lambda ctx: [ctx.root / "etc" / "hourglass" / "appliance"],
    consumes="install_app",
)
def configure_root(ctx: Context) -> None:
    """Overlay files, vendor settings, consoles, network; the marker that this is the appliance."""
    shutil.copytree(ctx.image / "overlay", ctx.root, symlinks=True, dirs_exist_ok=True)
    etc = ctx.root / "etc" / "hourglass"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "appliance").write_text(f"{ctx.vendor.name} {ctx.version}\n")
    (etc / "vendor.toml").write_text(render_vendor(ctx.vendor))
    write_unattended_marker(etc, ctx.vendor)
    (ctx.root / "etc" / "hostname").write_text(f"{ctx.vendor.slug}\n")
    (ctx.root / "etc" / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{ctx.vendor.slug}\n::1\tlocalhost ip6-localhost\n"
    )
    (ctx.root / "etc" / "default" / "locale").write_text(f"LANG={ctx.vendor.language}.UTF-8\n")
    for source, destination in ctx.vendor.extra_files():
        target = ctx.root / destination.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    # Debian's kmscon makes every other VT a kmscon login (autovt@ -> kmsconvt@): back to
    # getty, so tty2 is the autologin root shell of getty@tty2.service.d/autologin.conf.
    (ctx.root / "etc" / "systemd" / "system" / "autovt@.service").unlink(missing_ok=True)
    run(["chroot", ctx.root, "systemctl", "enable", "--quiet", *ENABLED_UNITS])
    run(["chroot", ctx.root, "systemctl", "mask", "--quiet", *MASKED_UNITS])
    resolv = ctx.root / "etc" / "resolv.conf"
    resolv.unlink(missing_ok=True)
    resolv.symlink_to("/run/systemd/resolve/stub-resolv.conf")


@step(
    inputs=lambda ctx: [After("configure_root"), str(ctx.epoch)],
    outputs=lambda ctx: [ctx.squashfs, ctx.kernel, ctx.initrd],
)
def make_squashfs(ctx: Context) -> None:
    """The root as squashfs (zstd: small, and quick to unpack); kernel and initrd beside it.

    Every timestamp is SOURCE_DATE_EPOCH: given as -all-time and -mkfs-time, and the variable
    itself kept away from mksquashfs, which refuses both at once and by itself only sets the
    creation time from it."""
    ctx.live.mkdir(parents=True, exist_ok=True)
    boot = ctx.root / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if len(kernels) != 1 or len(initrds) != 1:
        raise BuildError(
            f"Expected one kernel and one initrd in {boot}, found {kernels} {initrds}."
        )
    # New files, never rewritten in place: dist/ holds hard links to the previous ones.
    for source, target in ((kernels[0], ctx.kernel), (initrds[0], ctx.initrd)):
        target.unlink(missing_ok=True)
        shutil.copyfile(source, target)
    partial = ctx.squashfs.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    run(
        [
            "env",
            "--unset=SOURCE_DATE_EPOCH",
            which("mksquashfs"),
            ctx.root,
            partial,
            "-noappend",
            "-no-progress",
            "-quiet",
            "-comp",
            "zstd",
            "-Xcompression-level",
            "19",
            "-b",
            "1M",
            "-mkfs-time",
            str(ctx.epoch),
            "-all-time",
            str(ctx.epoch),
            "-e",
            "boot",
        ],
        env={k: v for k, v in ctx.environment().items() if k != "SOURCE_DATE_EPOCH"},
    )
    partial.rename(ctx.squashfs)
    for path in (ctx.kernel, ctx.initrd, ctx.squashfs):
        os.utime(path, (ctx.epoch, ctx.epoch))


def volume_id(ctx: Context) -> str:
    """ISO volume label: what `ls /dev/disk/by-label` shows; at most 32 characters."""
    return f"{ctx.vendor.slug}-{ctx.version}".upper().replace(".", "_").replace("-", "_")[:32]


def staged_boot_file(ctx: Context, name: str, destination: Path) -> None:
    """Copy a host boot file (see BOOT_FILES) with the build's fixed timestamp."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(BOOT_FILES[name][0], destination)
    os.utime(destination, (ctx.epoch, ctx.epoch))


def set_times(tree: Path, epoch: int) -> None:
    """Every file and folder under ``tree`` gets the build's timestamp (ISO and FAT record
    them)."""
    for path in sorted(tree.rglob("*"), reverse=True):
        os.utime(path, (epoch, epoch), follow_symlinks=False)
    os.utime(tree, (epoch, epoch))


def make_fat_image(ctx: Context, image: Path, files: dict[str, Path], size_mib: int) -> None:
    """A FAT image holding ``files`` (path inside -> source), built without mounting: a staged
    tree copied with mtools, folders included, keeping the build's timestamp."""
    staging = image.with_name(f".{image.name}.tree")
    if staging.exists():
        shutil.rmtree(staging)
    for inside, source in files.items():
        target = staging / inside.strip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    set_times(staging, ctx.epoch)
    image.unlink(missing_ok=True)
    volume = f"{ctx.epoch & 0xFFFFFFFF:08x}"
    run(
        ["mkfs.vfat", "--invariant", "-C", "-n", "HOURGLASS", "-i", volume, image,
         str(size_mib * 1024)],
        env=ctx.environment(),
    )  # fmt: skip
    for top in sorted(staging.iterdir()):
        run(["mcopy", "-s", "-m", "-i", image, top, "::/"], env=ctx.environment())
    shutil.rmtree(staging)


def render_menu(
    ctx: Context, template: str, *, base: str, kernel: str, initrd: str, where: str
) -> str:
    entries = bootmenu.load_entries(ctx.image / "boot", ctx.vendor.name)
    return bootmenu.render(
        ctx.image / "boot" / template,
        entries,
        base_params=base,
        kernel=kernel,
        initrd=initrd,
        where=where,
        name=ctx.vendor.name,
        version=ctx.version,
    )


def write(path: Path, text: str, epoch: int) -> None:
    """Replace ``path`` (never write through a hard link into another copy)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    os.utime(partial, (epoch, epoch))
    partial.replace(path)


def link_or_copy(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.unlink(missing_ok=True)
    try:
        os.link(source, destination)
    except OSError:
        shutil.copy2(source, destination)


@step(
    inputs=lambda ctx: [
        After("make_squashfs"),
        ctx.image / "boot",
        ctx.vendor.name,
        str(ctx.epoch),
        *[p for p, _ in BOOT_FILES.values()],
        *BUILD_CODE,
    ],
    outputs=lambda ctx: [ctx.iso],
)
def make_iso(ctx: Context) -> None:
    """Hybrid ISO: El Torito for BIOS (ISOLINUX) and UEFI (shim, signed GRUB), MBR and GPT
    so the same file boots from a CD and written with dd to a USB stick."""
    tree = ctx.iso_tree
    if tree.exists():
        shutil.rmtree(tree)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        link_or_copy(ctx.live / name, tree / "live" / name)
    write(tree / ".disk" / "info", f"{ctx.vendor.name} {ctx.version} amd64\n", ctx.epoch)
    for name in ("isolinux.bin", "ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32"):
        staged_boot_file(ctx, name, tree / "isolinux" / name)
    isolinux = render_menu(
        ctx,
        "isolinux.cfg.in",
        base="boot=live",
        kernel="/live/vmlinuz",
        initrd="/live/initrd.img",
        where="ISO, BIOS",
    )
    write(tree / "isolinux" / "isolinux.cfg", isolinux, ctx.epoch)
    grub = render_menu(
        ctx,
        "grub.cfg.in",
        base="boot=live",
        kernel="/live/vmlinuz",
        initrd="/live/initrd.img",
        where="ISO, UEFI",
    )
    write(tree / "boot" / "grub" / "grub.cfg", grub, ctx.epoch)
    # The EFI system partition image: shim (signed by Microsoft) loads grubx64.efi (signed by
    # Debian) from its own directory; GRUB finds the ISO by /.disk/info and reads the menu.
    efi = ctx.work / "efi-staging"
    if efi.exists():
        shutil.rmtree(efi)
    for name in ("shimx64.efi", "gcdx64.efi", "mmx64.efi"):
        staged_boot_file(ctx, name, efi / name)
    make_fat_image(
        ctx,
        tree / "boot" / "grub" / "efi.img",
        {
            "EFI/BOOT/BOOTX64.EFI": efi / "shimx64.efi",
            "EFI/BOOT/grubx64.efi": efi / "gcdx64.efi",
            "EFI/BOOT/mmx64.efi": efi / "mmx64.efi",
        },
        size_mib=8,
    )
    set_times(tree, ctx.epoch)
    ctx.dist.mkdir(parents=True, exist_ok=True)
    partial = ctx.dist / f".{ctx.iso.name}.partial"
    partial.unlink(missing_ok=True)
    run(
        [
            "xorriso",
            "-as",
            "mkisofs",
            "-o",
            partial,
            "-V",
            volume_id(ctx),
            "-iso-level",
            "3",
            "-J",
            "-joliet-long",
            "-r",
            "-isohybrid-mbr",
            BOOT_FILES["isohdpfx.bin"][0],
            "-b",
            "isolinux/isolinux.bin",
            "-c",
            "isolinux/boot.cat",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "-eltorito-alt-boot",
            "-e",
            "boot/grub/efi.img",
            "-no-emul-boot",
            "-isohybrid-gpt-basdat",
            tree,
        ],
        env=ctx.environment(),
    )
    size = partial.stat().st_size
    if size > ISO_LIMIT:
        partial.unlink()
        raise ImageTooLarge(
            f"The ISO would be {size / MiB:.0f} MiB; the limit is {ISO_LIMIT // MiB} MiB.",
            "Drop packages from image/packages.txt or the vendor's [packages] extra.",
        )
    partial.rename(ctx.iso)
    log.info("    %s: %.1f MiB", ctx.iso.name, size / MiB)


def write_pxe_configs(ctx: Context, bundle: Path, url: str) -> None:
    """The three boot configs of a PXE bundle, for a bundle served at ``url`` over HTTP."""
    url = url.rstrip("/")
    base = f"boot=live fetch={url}/filesystem.squashfs"
    write(
        bundle / "pxelinux.cfg" / "default",
        render_menu(
            ctx,
            "isolinux.cfg.in",
            base=base,
            kernel="vmlinuz",
            initrd="initrd.img",
            where="PXE, BIOS",
        ),
        ctx.epoch,
    )
    grub = render_menu(
        ctx,
        "grub.cfg.in",
        base=base,
        kernel="$cmdpath/vmlinuz",
        initrd="$cmdpath/initrd.img",
        where="PXE, UEFI",
    )
    write(bundle / "grub" / "grub.cfg", grub, ctx.epoch)
    write(bundle / "grub.cfg", grub, ctx.epoch)
    write(
        bundle / "boot.ipxe",
        render_menu(
            ctx,
            "boot.ipxe.in",
            base=base,
            kernel="vmlinuz",
            initrd="initrd.img",
            where="PXE, iPXE over HTTP",
        ),
        ctx.epoch,
    )


def retarget_pxe_bundle(ctx: Context, bundle: Path, url: str) -> None:
    """Rewrite a bundle's boot configs for another HTTP address, and its SHA256SUMS."""
    if not (bundle / "pxelinux.cfg" / "default").exists():
        raise BuildError(f"{bundle} is not a PXE bundle (no pxelinux.cfg/default).")
    write_pxe_configs(ctx, bundle, url)
    write_sums(bundle, bundle / "SHA256SUMS")


PXE_FILES = {
    "pxelinux.0": "pxelinux.0",
    "ldlinux.c32": "ldlinux.c32",
    "menu.c32": "menu.c32",
    "libutil.c32": "libutil.c32",
    "libcom32.c32": "libcom32.c32",
    "bootnetx64.efi": "shimx64.efi",
    "grubx64.efi": "grubnetx64.efi",
    "mmx64.efi": "mmx64.efi",
}


@step(
    inputs=lambda ctx: [
        After("make_squashfs"),
        ctx.image / "boot",
        ctx.image / "pxe-README.md",
        ctx.vendor.name,
        ctx.vendor.pxe_url,
        str(ctx.epoch),
        *[p for p, _ in BOOT_FILES.values()],
        *BUILD_CODE,
    ],
    outputs=lambda ctx: [ctx.pxe / "SHA256SUMS"],
)
def make_pxe_bundle(ctx: Context) -> None:
    """Kernel, initrd and root image with PXELINUX (BIOS), shim + GRUB netboot (UEFI) and
    iPXE configs; the root image is fetched into RAM over HTTP by live-boot."""
    partial = ctx.dist / f".{ctx.pxe.name}.partial"
    if partial.exists():
        shutil.rmtree(partial)
    for name in ("vmlinuz", "initrd.img", "filesystem.squashfs"):
        link_or_copy(ctx.live / name, partial / name)
    for name, source in PXE_FILES.items():
        staged_boot_file(ctx, source, partial / name)
    url = f"{ctx.vendor.pxe_url}/{ctx.pxe.name}"
    write_pxe_configs(ctx, partial, url)
    readme = Template((ctx.image / "pxe-README.md").read_text()).safe_substitute(
        name=ctx.vendor.name,
        version=ctx.version,
        bundle=ctx.pxe.name,
        url=url,
        server=urllib.parse.urlsplit(url).hostname or "192.168.100.1",
    )
    write(partial / "README.md", readme, ctx.epoch)
    write_sums(partial, partial / "SHA256SUMS")
    if ctx.pxe.exists():
        shutil.rmtree(ctx.pxe)
    partial.rename(ctx.pxe)


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_sums(directory: Path, output: Path, files: list[Path] | None = None) -> None:
    """``sha256sum -c``-compatible list of ``files`` (default: all under ``directory``)."""
    if files is None:
        files = sorted(p for p in directory.rglob("*") if p.is_file() and p != output)
    lines = [f"{sha256(p)}  {p.relative_to(directory).as_posix()}\n" for p in files]
    partial = output.with_name(f".{output.name}.partial")
    partial.write_text("".join(lines))
    partial.replace(output)


def write_checksums(ctx: Context) -> None:
    """dist/SHA256SUMS: every ISO and every file of every PXE bundle in dist/ (a vendor's
    build sits beside the default one)."""
    log.info("==> write_checksums")
    files = sorted(
        p
        for p in ctx.dist.rglob("*")
        if p.is_file()
        and p != ctx.checksums
        and not any(part.startswith(".") for part in p.relative_to(ctx.dist).parts)
    )
    write_sums(ctx.dist, ctx.checksums, files)
