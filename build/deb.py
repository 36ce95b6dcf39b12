"""The agent's Debian package: ``make deb`` -> ``dist/hourglass-agent_<version>_all.deb``.

fetch_wheels(pkg)        the engine's dependencies as wheels for every target, cached
build_engine_wheel(pkg)  the engine (``imaging/`` only: no app, no textual) as a wheel
stage_tree(pkg)          the files: wheels, /usr/bin/hourglass, units, example configuration
write_control(pkg)       DEBIAN/: control, maintainer scripts, conffiles, md5sums
build_deb(pkg)           dpkg-deb

Debian 12's python3-* packages are too old for several of the engine's dependencies, so the
package ships wheels (CPython 3.11 for Debian 12, 3.12 for Ubuntu 24.04; x86_64)
and its postinst installs them into a venv, /usr/lib/hourglass-agent/venv, with the system
site packages (Debian's python3-parted and python3-pyudev). docs/AGENT.md.
"""

from __future__ import annotations

import argparse
import email.utils
import gzip
import hashlib
import logging
import os
import re
import shutil
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from build.context import REPOSITORY, source_date_epoch
from build.errors import BuildError
from imaging import __version__
from imaging.errors import HourglassError
from imaging.process import run

log = logging.getLogger("build")

PACKAGE = "hourglass-agent"
# Where the package puts things (the maintainer scripts in build/debian/ name them too).
SHARE = Path("usr/share") / PACKAGE
UNITS = Path("lib/systemd/system")
# The engine's dependencies that come from Debian, not from wheels, and the app's own.
FROM_DEBIAN = {"pyparted": "python3-parted", "pyudev": "python3-pyudev"}
APP_ONLY = ("textual", "qrcode")
# Debian packages the engine calls at run time for the agent and the `files` commands:
# fusermount3 and libfuse3 (mfusepy), losetup and mount. blkid and dmesg are util-linux's,
# which is essential (never named in Depends).
DEPENDS = (
    "python3 (>= 3.11)",
    "python3 (<< 3.13)",  # the wheels are for CPython 3.11 and 3.12
    "python3-venv",
    *FROM_DEBIAN.values(),
    "fuse3",
    "mount",
)
# Versions from disk images of these filesystems are mounted with their FUSE drivers;
# dnsmasq-base serves a room's network boot (`hourglass lab serve`, docs/LAB.md).
SUGGESTS = ("ntfs-3g", "exfat-fuse", "fusefat", "dnsmasq-base")
PYTHONS = ("3.11", "3.12")
# Not aarch64 yet: fastcdc 1.7 publishes no aarch64 Linux wheel (its sdist needs poetry-core,
# Cython and a compiler), and the venv is built without a compiler. docs/AGENT.md.
ARCHITECTURES = ("x86_64",)
# Debian 12 has glibc 2.36, Ubuntu 24.04 2.39: manylinux wheels up to 2.36 serve both. pip
# takes a manylinux tag literally, so every older one is named too.
GLIBC_MINOR = 36
# Bump when the way wheels are fetched changes in a way the inputs do not show.
WHEELS_RECIPE = 1
# setuptools and wheel for building the engine's wheel (pyproject's build-system), kept in
# the cache too so a second build needs no network.
BUILD_REQUIREMENTS = ("setuptools>=68", "wheel")


def default_cache() -> Path:
    """$HOURGLASS_WHEEL_CACHE, else $XDG_CACHE_HOME/hourglass/wheels (~/.cache/...)."""
    if os.environ.get("HOURGLASS_WHEEL_CACHE"):
        return Path(os.environ["HOURGLASS_WHEEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hourglass" / "wheels"


def default_maintainer() -> str:
    """Debian's convention: $DEBFULLNAME <$DEBEMAIL>, else the project's own address."""
    name = os.environ.get("DEBFULLNAME", "Hourglass developers")
    address = os.environ.get("DEBEMAIL", "hourglass@example.org")
    return f"{name} <{address}>"


@dataclass
class DebBuild:
    """The package being built: paths are properties of ``repository``, ``work``, ``cache``."""

    repository: Path = REPOSITORY
    work: Path = REPOSITORY / "build" / "work" / "deb"
    dist: Path = REPOSITORY / "dist"
    cache: Path = field(default_factory=default_cache)
    version: str = __version__
    epoch: int = 0
    maintainer: str = field(default_factory=default_maintainer)

    def __post_init__(self) -> None:
        if not self.epoch:
            self.epoch = source_date_epoch(self.repository)

    @property
    def sources(self) -> Path:
        """Maintainer scripts, the wrapper and the example configuration."""
        return self.repository / "build" / "debian"

    @property
    def units(self) -> Path:
        return self.repository / "build" / "host"

    @property
    def tree(self) -> Path:
        """The package's root as dpkg-deb packs it."""
        return self.work / "tree"

    @property
    def wheels(self) -> Path:
        return self.tree / SHARE / "wheels"

    @property
    def deb(self) -> Path:
        return self.dist / f"{PACKAGE}_{self.version}_all.deb"

    def environment(self) -> dict[str, str]:
        return {"SOURCE_DATE_EPOCH": str(self.epoch), "LC_ALL": "C.UTF-8", "TZ": "UTC"}


def build_package(pkg: DebBuild) -> Path:
    """The whole recipe, in order; returns the .deb."""
    for step in (fetch_wheels, build_engine_wheel, stage_tree, write_control, build_deb):
        log.info("==> %s", step.__name__)
        started = time.monotonic()
        step(pkg)
        log.info("<== %s: done in %.1f s", step.__name__, time.monotonic() - started)
    return pkg.deb


# --- inputs -----------------------------------------------------------------------------


def requirement_name(requirement: str) -> str:
    """The distribution name of a PEP 508 requirement, normalised (``Foo_bar`` -> foo-bar)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if match is None:
        raise BuildError(f"pyproject.toml: cannot read the requirement {requirement!r}.")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def runtime_requirements(repository: Path = REPOSITORY) -> list[str]:
    """pyproject's dependencies less the app's and those Debian provides: what the agent's
    venv installs from wheels (the engine's own wheel goes in with --no-deps)."""
    project = tomllib.loads((repository / "pyproject.toml").read_text())["project"]
    skip = {*FROM_DEBIAN, *APP_ONLY}
    return sorted(r for r in project["dependencies"] if requirement_name(r) not in skip)


def platforms(architecture: str) -> list[str]:
    """Every manylinux tag a host with glibc 2.GLIBC_MINOR accepts, newest first."""
    tags = [f"manylinux_2_{m}_{architecture}" for m in range(GLIBC_MINOR, 16, -1)]
    return [*tags, f"manylinux2014_{architecture}"]


def targets() -> Iterator[tuple[str, str]]:
    for python in PYTHONS:
        for architecture in ARCHITECTURES:
            yield python, architecture


def wheels_key(pkg: DebBuild) -> str:
    h = hashlib.sha256(f"recipe {WHEELS_RECIPE}\0".encode())
    for item in (*runtime_requirements(pkg.repository), *BUILD_REQUIREMENTS, *PYTHONS):
        h.update(f"{item}\0".encode())
    for architecture in ARCHITECTURES:
        h.update(" ".join(platforms(architecture)).encode())
    return h.hexdigest()[:16]


def cached_wheels(pkg: DebBuild) -> Path:
    """The cache folder of this set of requirements and targets."""
    return pkg.cache / f"set-{wheels_key(pkg)}"


def pip(*args: str | Path) -> list[str | Path]:
    # This host's pip configuration and PIP_* variables (find-links, extra indexes) must not
    # change what the package holds: wheels from PyPI only.
    return [sys.executable, "-m", "pip", "--isolated", "--disable-pip-version-check", *args]


# --- steps ------------------------------------------------------------------------------


def fetch_wheels(pkg: DebBuild) -> None:
    """The runtime wheels of every target, and the engine's build tools, from PyPI once:
    a complete set is kept under the cache, keyed by the requirements and targets."""
    folder = cached_wheels(pkg)
    if (folder / "COMPLETE").exists():
        log.info("    wheels: cached in %s", folder)
        return
    partial = folder.with_name(folder.name + ".partial")
    for stale in pkg.cache.glob("set-*.partial"):  # of a download that was interrupted
        shutil.rmtree(stale)
    partial.mkdir(parents=True)
    requirements = runtime_requirements(pkg.repository)
    for python, architecture in targets():
        log.info("    wheels: CPython %s %s", python, architecture)
        tags = [a for p in platforms(architecture) for a in ("--platform", p)]
        abi = "cp" + python.replace(".", "")
        argv = pip(
            "download", "--quiet", "--dest", partial, "--only-binary=:all:", *tags,
            "--python-version", python, "--implementation", "cp", "--abi", abi,
            *requirements,
        )  # fmt: skip
        run(argv, env=pkg.environment())
    run(pip("download", "--quiet", "--dest", partial / "build", *BUILD_REQUIREMENTS))
    (partial / "COMPLETE").write_text("".join(f"{p.name}\n" for p in sorted(partial.glob("*.whl"))))
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    # Keep the two newest sets (say, two branches' requirements), drop older ones.
    sets = [p for p in pkg.cache.glob("set-*") if not p.name.endswith(".partial")]
    sets.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in sets[2:]:
        shutil.rmtree(old)


def engine_wheel(pkg: DebBuild) -> Path:
    return pkg.work / "engine" / f"hourglass-{pkg.version}-py3-none-any.whl"


def build_engine_wheel(pkg: DebBuild) -> None:
    """The engine's wheel, from a copy of pyproject.toml, README.md and imaging/ only: the app
    (recovery_ui/, textual) is not in it, so `hourglass ui` is simply absent. Built offline
    with the cached setuptools."""
    source = pkg.work / "engine-source"
    out = engine_wheel(pkg).parent
    for folder in (source, out):
        if folder.exists():
            shutil.rmtree(folder)
    source.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(pkg.repository / name, source / name)
    shutil.copytree(
        pkg.repository / "imaging",
        source / "imaging",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    build_tools = cached_wheels(pkg) / "build"
    argv = pip(
        "wheel", "--quiet", "--no-deps", "--no-index", "--find-links", build_tools,
        "--wheel-dir", out, source,
    )  # fmt: skip
    run(argv, env=pkg.environment())
    if not engine_wheel(pkg).exists():
        raise BuildError(f"pip wheel did not write {engine_wheel(pkg)}.")
    shutil.rmtree(source)


def install_file(source: Path, target: Path, mode: int = 0o644) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    target.chmod(mode)


def stage_tree(pkg: DebBuild) -> None:
    """The package's files under ``pkg.tree``, with fixed modes and times."""
    if pkg.tree.exists():
        shutil.rmtree(pkg.tree)
    pkg.wheels.mkdir(parents=True)
    cache = cached_wheels(pkg)
    for wheel in sorted(cache.glob("*.whl")):
        install_file(wheel, pkg.wheels / wheel.name)
    install_file(engine_wheel(pkg), pkg.wheels / engine_wheel(pkg).name)
    requirements = "".join(f"{r}\n" for r in runtime_requirements(pkg.repository))
    (pkg.tree / SHARE / "requirements.txt").write_text(requirements)
    install_file(pkg.sources / "hourglass", pkg.tree / "usr" / "bin" / "hourglass", 0o755)
    for unit in ("hourglass-agent.service", "hourglass-copy@.service", "hourglass-copy@.timer"):
        install_file(pkg.units / unit, pkg.tree / UNITS / unit)
    etc = pkg.tree / "etc" / "hourglass"
    install_file(pkg.sources / "agent.toml.example", etc / "agent.toml.example")
    doc = pkg.tree / "usr" / "share" / "doc" / PACKAGE
    install_file(pkg.units / "copy.conf.example", doc / "examples" / "copy.conf.example")
    install_file(pkg.repository / "README.md", doc / "README.md")
    year = datetime.fromtimestamp(pkg.epoch, UTC).year
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"
        "Upstream-Name: hourglass\n\n"
        f"Files: *\nCopyright: {year} the Hourglass developers\nLicense: GPL-3.0-or-later\n"
        " On Debian systems the full text is in /usr/share/common-licenses/GPL-3.\n"
    )
    # A native package's changelog.gz (Debian policy 12.7), one entry; gzip without a name
    # or time in its header, so the bytes depend only on the version and the epoch.
    (doc / "changelog.gz").write_bytes(gzip.compress(changelog(pkg).encode(), mtime=0))


def changelog(pkg: DebBuild) -> str:
    when = email.utils.format_datetime(datetime.fromtimestamp(pkg.epoch, UTC))
    return (
        f"{PACKAGE} ({pkg.version}) unstable; urgency=medium\n\n"
        f"  * Built from the Hourglass sources (make deb).\n\n"
        f" -- {pkg.maintainer}  {when}\n"
    )


def installed_size_kib(tree: Path) -> int:
    """Installed-Size as dpkg-gencontrol counts it: KiB per file, rounded up, plus one per
    folder (the venv postinst builds is not in it)."""
    total = 0
    for path in tree.rglob("*"):
        if "DEBIAN" in path.relative_to(tree).parts:
            continue
        total += -(-path.lstat().st_size // 1024) if path.is_file() else 1
    return total


def control_text(pkg: DebBuild) -> str:
    description = (
        "Hourglass agent: continuous protection of this PC's files\n"
        " Every file saved under the protected paths becomes a version in an Hourglass\n"
        " repository (deduplicated, compressed, encrypted with AES-256) within seconds,\n"
        " through fanotify. `hourglass files versions` lists the versions of a file and\n"
        " `hourglass files restore --at TIME` brings files back as they were at that\n"
        " second. The service starts once /etc/hourglass/agent.toml exists.\n"
        " .\n"
        " The engine's Python dependencies are bundled as wheels (CPython 3.11 and 3.12,\n"
        " x86_64) and installed into /usr/lib/hourglass-agent/venv.\n"
    )
    fields = {
        "Package": PACKAGE,
        "Version": pkg.version,
        "Architecture": "all",
        "Maintainer": pkg.maintainer,
        "Installed-Size": str(installed_size_kib(pkg.tree)),
        "Depends": ", ".join(DEPENDS),
        "Suggests": ", ".join(SUGGESTS),
        "Section": "admin",
        "Priority": "optional",
        "Description": description.rstrip("\n"),
    }
    return "".join(f"{k}: {v}\n" for k, v in fields.items())


def md5sums(tree: Path) -> str:
    lines = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(tree)
        if relative.parts[0] == "DEBIAN":
            continue
        digest = hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()
        lines.append(f"{digest}  {relative.as_posix()}\n")
    return "".join(lines)


def write_control(pkg: DebBuild) -> None:
    """DEBIAN/control, md5sums, conffiles and the maintainer scripts."""
    debian = pkg.tree / "DEBIAN"
    debian.mkdir()
    (debian / "control").write_text(control_text(pkg))
    (debian / "md5sums").write_text(md5sums(pkg.tree))
    etc = sorted(p for p in (pkg.tree / "etc").rglob("*") if p.is_file())
    conffiles = ["/" + p.relative_to(pkg.tree).as_posix() for p in etc]
    (debian / "conffiles").write_text("".join(f"{c}\n" for c in conffiles))
    for script in ("postinst", "prerm", "postrm"):
        text = (pkg.sources / script).read_text().replace("@VERSION@", pkg.version)
        (debian / script).write_text(text)
        (debian / script).chmod(0o755)


def build_deb(pkg: DebBuild) -> None:
    """dpkg-deb with root as owner and SOURCE_DATE_EPOCH as every time: the same inputs give
    the same package."""
    for path in [pkg.tree, *pkg.tree.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
        os.utime(path, (pkg.epoch, pkg.epoch), follow_symlinks=False)
    pkg.dist.mkdir(parents=True, exist_ok=True)
    partial = pkg.dist / f".{pkg.deb.name}.partial"
    partial.unlink(missing_ok=True)
    # The wheels are zip files already: gzip is as small as xz here, and quicker.
    argv: list[str | Path] = [
        "dpkg-deb",
        "--root-owner-group",
        "-Zgzip",
        "--build",
        pkg.tree,
        partial,
    ]
    run(argv, env=pkg.environment())
    partial.rename(pkg.deb)
    log.info("    %s: %.1f MiB", pkg.deb.name, pkg.deb.stat().st_size / 2**20)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m build.deb`` (``make deb``)."""
    parser = argparse.ArgumentParser(prog="python -m build.deb", description=__doc__.split("\n")[0])
    parser.add_argument("--dist", type=Path, help="where the .deb goes (default: dist/)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    pkg = DebBuild()
    if args.dist:
        pkg.dist = args.dist.resolve()
    try:
        print(build_package(pkg))
    except HourglassError as e:
        if args.debug:
            raise
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
