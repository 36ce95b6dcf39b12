"""The agent's Debian package (`make deb`, build/deb.py): its control data and files, two
builds alike, the wheel set resolving for every target, and an install on a stock Debian 12
(an mmdebstrap chroot) that protects a file, restores it as of a second, and purges."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from build import deb
from build.context import MIRROR, REPOSITORY, SECURITY_MIRROR, SUITE
from imaging import __version__
from tests.support import loop_device, mounted, sh

CACHE = REPOSITORY / "build" / "work" / "cache"
# Bump when stock_root() below changes in a way its key does not show.
STOCK_RECIPE = 1
CONFIG = "/etc/hourglass/agent.toml"  # the default place, named as the unit names it
CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Not the appliance's lock (tests/build/conftest.py): a package build need not wait for an
# appliance build on the other xdist worker.
LOCK = REPOSITORY / "build" / "work" / "deb-tests.lock"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    """One xdist worker at a time fills the wheel cache and the stock root's cache."""
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def build(where: Path) -> Path:
    """A package built into ``where`` (the wheel cache is shared; the lock keeps two xdist
    workers from downloading into it at once)."""
    with locked():
        return deb.build_package(deb.DebBuild(work=where / "work", dist=where / "dist"))


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """This checkout's .deb, built once per session (PyPI the first time, then the cache)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb is not installed (apt install dpkg)")
    return build(tmp_path_factory.mktemp("deb"))


def field_values(info: str) -> dict[str, str]:
    values = {}
    for line in info.splitlines():
        if line.startswith(" ") and ":" in line and not line.startswith("  "):
            key, _, value = line.strip().partition(":")
            values[key] = value.strip()
    return values


def contents(package: Path) -> dict[str, str]:
    """Path in the package -> its mode column (`dpkg-deb --contents`)."""
    listing = {}
    for line in sh("dpkg-deb", "--contents", package).stdout.splitlines():
        mode, owner, *_, path = line.split()
        listing[path.removeprefix(".")] = f"{mode} {owner}"
    return listing


@pytest.mark.slow
def test_control_fields_and_files(package: Path, tmp_path: Path) -> None:
    assert package.name == f"hourglass-agent_{__version__}_all.deb"
    info = sh("dpkg-deb", "--info", package).stdout
    values = field_values(info)
    assert values["Package"] == "hourglass-agent" and values["Version"] == __version__
    assert values["Architecture"] == "all" and "<" in values["Maintainer"]
    depends = [d.strip() for d in values["Depends"].split(",")]
    for needed in ("python3 (>= 3.11)", "python3-venv", "python3-parted", "python3-pyudev"):
        assert needed in depends
    assert "fuse3" in depends  # mfusepy's libfuse3 and fusermount3 (files from images)
    for script in ("postinst", "prerm", "postrm", "md5sums", "conffiles"):
        assert script in info

    files = contents(package)
    assert files["/usr/bin/hourglass"].startswith("-rwxr-xr-x root/root")
    assert "/lib/systemd/system/hourglass-agent.service" in files
    assert "/etc/hourglass/agent.toml.example" in files
    # An agent.toml would start the service before anyone configured it (ConditionPathExists).
    assert "/etc/hourglass/agent.toml" not in files
    wheels = [p for p in files if p.startswith("/usr/share/hourglass-agent/wheels/")]
    names = {deb.requirement_name(Path(p).name.split("-")[0]) for p in wheels}
    assert {"hourglass", "cryptography", "blake3", "boto3", "fastcdc", "zfec"} <= names
    assert not names & {"textual", "pyparted", "pyudev", "qrcode"}
    assert all(owner.endswith("root/root") for owner in files.values())

    control = tmp_path / "control"
    sh("dpkg-deb", "--control", package, control)
    assert (control / "conffiles").read_text() == "/etc/hourglass/agent.toml.example\n"
    listed = {line.split("  ", 1)[1] for line in (control / "md5sums").read_text().splitlines()}
    assert listed == {p.lstrip("/") for p, mode in files.items() if mode.startswith("-")}
    for script in ("postinst", "prerm", "postrm"):
        sh("sh", "-n", control / script)  # parses
    assert f"hourglass=={__version__}" in (control / "postinst").read_text()
    if shutil.which("lintian"):
        out = subprocess.run(["lintian", "--no-tag-display-limit", package], capture_output=True)
        errors = [line for line in out.stdout.decode().splitlines() if line.startswith("E:")]
        assert not errors, out.stdout.decode()


@pytest.mark.slow
def test_the_engine_wheel_has_no_app(package: Path, tmp_path: Path) -> None:
    sh("dpkg-deb", "-x", package, tmp_path)
    (wheel,) = (tmp_path / "usr/share/hourglass-agent/wheels").glob("hourglass-*.whl")
    names = sh(sys.executable, "-m", "zipfile", "-l", wheel).stdout
    assert "imaging/agent/run.py" in names and "recovery_ui/" not in names
    requirements = (tmp_path / "usr/share/hourglass-agent/requirements.txt").read_text()
    assert "textual" not in requirements and "cryptography>=44" in requirements


@pytest.mark.slow
def test_two_builds_give_the_same_files(package: Path, tmp_path: Path) -> None:
    again = build(tmp_path)
    assert contents(again) == contents(package)
    for built, folder in ((package, tmp_path / "a"), (again, tmp_path / "b")):
        sh("dpkg-deb", "--control", built, folder)
    assert (tmp_path / "a" / "md5sums").read_text() == (tmp_path / "b" / "md5sums").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("python", deb.PYTHONS)
@pytest.mark.parametrize("architecture", deb.ARCHITECTURES)
def test_the_wheels_resolve_for(
    package: Path, tmp_path: Path, python: str, architecture: str
) -> None:
    """What Ubuntu 24.04 (CPython 3.12) installs, checked without its archive: pip resolves
    the requirements from the bundled wheels alone, for each target."""
    sh("dpkg-deb", "-x", package, tmp_path / "root")
    share = tmp_path / "root" / "usr/share/hourglass-agent"
    tags = [a for p in deb.platforms(architecture) for a in ("--platform", p)]
    common = [
        sys.executable, "-m", "pip", "--isolated", "install", "--dry-run", "--no-index",
        "--find-links", share / "wheels", "--only-binary=:all:", "--python-version", python,
        "--implementation", "cp", *tags, "--target", tmp_path / "target",
    ]  # fmt: skip
    out = sh(*common, "--ignore-installed", "--requirement", share / "requirements.txt")
    assert "Would install" in out.stdout and "cryptography" in out.stdout
    out = sh(*common, "--no-deps", f"hourglass=={__version__}")
    assert f"hourglass-{__version__}" in out.stdout


# --- the install on a stock Debian 12 ----------------------------------------------------


def prefetched() -> list[str]:
    """The package's Depends, by name: downloaded (not installed) into the stock root's apt
    cache, so a warm run installs without the network."""
    return sorted({d.split()[0] for d in deb.DEPENDS})


@dataclass(frozen=True)
class Distribution:
    """A stock system to install the package on: its suite, sources and archive key."""

    name: str
    suite: str
    sources: tuple[str, ...]
    keyring: str = ""  # "" : the machine's own (Debian's) keys
    include: tuple[str, ...] = ()  # beyond minbase


DEBIAN = Distribution(
    "debian",
    SUITE,
    (
        f"deb {MIRROR} {SUITE} main",
        f"deb {MIRROR} {SUITE}-updates main",
        f"deb {SECURITY_MIRROR} {SUITE}-security main",
    ),
)
UBUNTU_MIRROR = "http://archive.ubuntu.com/ubuntu"
UBUNTU = Distribution(
    "ubuntu",
    "noble",
    tuple(
        f"deb {UBUNTU_MIRROR} {suite} main universe"
        for suite in ("noble", "noble-updates", "noble-security")
    ),
    keyring="ubuntu",
    include=("apt",),  # Ubuntu's minbase has no apt (it is "important" there, not "required")
)
# Ubuntu's archive keys: Debian 12 has no package of them, so the keyring's package comes
# from Ubuntu's pool, checked against this digest (ubuntu-keyring 2023.11.28.1, noble's).
UBUNTU_KEYRING_DEB = "pool/main/u/ubuntu-keyring/ubuntu-keyring_2023.11.28.1_all.deb"
UBUNTU_KEYRING_SHA256 = "36de43b15853ccae0028e9a767613770c704833f82586f28eb262f0311adb8a8"


def ubuntu_keyring() -> Path:
    """Ubuntu's archive keyring, cached beside the stock roots."""
    keyring = CACHE / "ubuntu-archive-keyring.gpg"
    if keyring.exists():
        return keyring
    data = urllib.request.urlopen(f"{UBUNTU_MIRROR}/{UBUNTU_KEYRING_DEB}", timeout=60).read()
    assert hashlib.sha256(data).hexdigest() == UBUNTU_KEYRING_SHA256, "not the keyring pinned"
    work = CACHE / "ubuntu-keyring"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    (work / "keyring.deb").write_bytes(data)
    sh("dpkg-deb", "-x", work / "keyring.deb", work / "tree")
    shutil.copyfile(work / "tree/usr/share/keyrings/ubuntu-archive-keyring.gpg", keyring)
    shutil.rmtree(work)
    return keyring


def stock_root(distribution: Distribution = DEBIAN) -> Path:
    """A minbase root of ``distribution`` as a tarball, cached in build/work/cache by its
    inputs (as the appliance's base is: CI pays mmdebstrap once)."""
    h = hashlib.sha256(f"{STOCK_RECIPE} {distribution}".encode())
    h.update(" ".join(prefetched()).encode())
    tarball = CACHE / f"stock-{distribution.suite}-{h.hexdigest()[:16]}.tar"
    with locked():
        if tarball.exists():
            return tarball
        CACHE.mkdir(parents=True, exist_ok=True)
        keys = [f"--keyring={ubuntu_keyring()}"] if distribution.keyring else []
        if distribution.include:
            keys.append("--include=" + ",".join(distribution.include))
        partial = tarball.with_name(tarball.name + ".partial")
        partial.unlink(missing_ok=True)
        download = 'chroot "$1" apt-get install --download-only -y -q ' + " ".join(prefetched())
        subprocess.run(
            [
                "mmdebstrap", "--variant=minbase", "--mode=root", "--format=tar",
                "--skip=cleanup/apt/lists", "--skip=cleanup/apt/cache", *keys,
                '--aptopt=Acquire::Retries "3"', f"--customize-hook={download}",
                distribution.suite, partial, *distribution.sources,
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        for old in CACHE.glob(f"stock-{distribution.suite}-*.tar"):
            old.unlink()
        partial.rename(tarball)
        return tarball


class Chroot:
    """Commands in ``root`` with a clean environment, as root's shell on that host."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def argv(self, *argv: str) -> list[str]:
        env = ["env", "-i", f"PATH={CHROOT_PATH}", "HOME=/root", "LC_ALL=C.UTF-8"]
        return ["chroot", str(self.root), *env, "DEBIAN_FRONTEND=noninteractive", *argv]

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        out = subprocess.run(self.argv(*argv), capture_output=True, text=True)
        if check and out.returncode != 0:
            raise AssertionError(f"{argv} exited {out.returncode}:\n{out.stdout}\n{out.stderr}")
        return out

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")


@contextlib.contextmanager
def unpacked(tarball: Path, root: Path) -> Iterator[Chroot]:
    """The stock root in ``root`` with /proc and /sys (the engine tells a lost drive by
    /sys/dev/block); nothing of the host's /dev is bound in (the tarball holds its own device
    nodes), so a failed clean-up can never delete host files."""
    root.mkdir()
    sh("tar", "--numeric-owner", "-xpf", tarball, "-C", root)
    shutil.copyfile("/etc/resolv.conf", root / "etc" / "resolv.conf")
    with contextlib.ExitStack() as stack:
        for kind in ("proc", "sysfs"):
            where = root / ("proc" if kind == "proc" else "sys")
            sh("mount", "-t", kind, kind, where)
            stack.callback(subprocess.run, ["umount", str(where)], check=False)
        yield Chroot(root)


def next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


def wait_for(what: str, condition: Callable[[], bool], limit: float = 120) -> None:
    """Poll ``condition``; a bound on the wait, not a timed assertion."""
    deadline = time.monotonic() + limit
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {limit:.0f} s")
        time.sleep(0.3)


def now_second() -> str:
    return datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.slow
def test_installs_protects_restores_and_purges_on_stock_debian(
    package: Path, tmp_path: Path, results: dict[str, object]
) -> None:
    on_stock(DEBIAN, package, tmp_path, results)


@pytest.mark.root
@pytest.mark.integration
@pytest.mark.slow
def test_installs_protects_restores_and_purges_on_stock_ubuntu(
    package: Path, tmp_path: Path, results: dict[str, object]
) -> None:
    """Ubuntu 24.04: Python 3.12, the package's other set of wheels."""
    on_stock(UBUNTU, package, tmp_path, results)


def on_stock(
    distribution: Distribution, package: Path, tmp_path: Path, results: dict[str, object]
) -> None:
    if shutil.which("mmdebstrap") is None:
        pytest.skip("mmdebstrap is not installed (apt install mmdebstrap)")
    started = time.monotonic()
    tarball = stock_root(distribution)
    suffix = "" if distribution is DEBIAN else f"_{distribution.name}"
    results[f"deb_stock_root_seconds{suffix}"] = round(time.monotonic() - started, 1)
    protected_image = tmp_path / "protected.img"
    with open(protected_image, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    sh("mkfs.ext4", "-q", "-F", protected_image)
    with (
        unpacked(tarball, tmp_path / "root") as host,
        loop_device(protected_image) as loop,
        mounted(loop, tmp_path / "protected") as fs,
    ):
        inside = host.path("/srv/protected")
        inside.mkdir(parents=True)
        sh("mount", "--bind", fs, inside)
        try:
            exercise(host, package)
        finally:
            subprocess.run(["umount", str(inside)], check=False)
    results[f"deb_install_test_seconds{suffix}"] = round(time.monotonic() - started, 1)


def exercise(host: Chroot, package: Path) -> None:
    shutil.copyfile(package, host.path("/tmp") / package.name)
    host.run("apt-get", "install", "-y", "-q", f"/tmp/{package.name}")
    assert host.run("hourglass", "--version").stdout.strip() == f"hourglass {__version__}"
    # Installed, not enabled, not configured.
    assert host.path("/lib/systemd/system/hourglass-agent.service").exists()
    assert host.path("/etc/hourglass/agent.toml.example").exists()
    assert not host.path(CONFIG).exists()
    assert (
        not host.path("/etc/systemd/system/multi-user.target.wants")
        .joinpath("hourglass-agent.service")
        .exists()
    )
    python = "/usr/lib/hourglass-agent/venv/bin/python"
    where = host.run(python, "-c", "import parted, pyudev; print(parted.__file__, pyudev.__file__)")
    assert where.stdout.count("/usr/lib/python3/dist-packages/") == 2  # Debian's
    assert host.run(python, "-c", "import textual", check=False).returncode != 0
    # The help lists no `ui`: the app is not in the engine's wheel.
    assert " ui " not in host.run("hourglass", "--help").stdout

    secret = host.path("/root/passphrase")
    secret.write_text("stock debian horse\n")
    secret.chmod(0o600)
    repo = ["--repo", "/srv/repo", "--passphrase-file", "/root/passphrase"]
    host.run("hourglass", "init", "/srv/repo", "--passphrase-file", "/root/passphrase")
    host.path(CONFIG).write_text(
        '[repository]\nlocation = "/srv/repo"\npassphrase_file = "/root/passphrase"\n'
        '[protect]\npaths = ["/srv/protected"]\n'
    )
    report = host.path("/srv/protected/docs/report.bin")
    report.parent.mkdir()
    first, second = os.urandom(300_000), os.urandom(200_000)
    report.write_bytes(first)
    host.run("hourglass", "agent", "--once", "--config", CONFIG)
    at_first = now_second()
    next_second()
    report.write_bytes(second)
    host.run("hourglass", "agent", "--once", "--config", CONFIG)
    at_second = now_second()

    def versions() -> int:
        out = host.run("hourglass", "files", "versions", *repo, "/srv/protected/docs/report.bin")
        return out.stdout.count(" version ")

    assert versions() == 2
    # The service's command, in the foreground: fanotify (FAN_MARK_FILESYSTEM) on the loop
    # device's ext4 sees a write made from outside the chroot.
    status = ("hourglass", "agent", "status", "--json", "--config", CONFIG)
    agent = subprocess.Popen(
        host.argv("hourglass", "agent", "--config", CONFIG),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("the agent running", lambda: json.loads(host.run(*status).stdout)["running"])
        next_second()
        third = os.urandom(100_000)
        report.write_bytes(third)
        wait_for("a third version", lambda: versions() == 3)
        at_third = now_second()
    finally:
        agent.terminate()
        _, errors = agent.communicate(timeout=60)
    assert agent.returncode == 0, errors  # SIGTERM: commit what is pending, exit 0
    assert not json.loads(host.run(*status).stdout)["running"]
    restores = ((at_first, first, "/root/one"), (at_second, second, "/root/two"))
    for at, expected, out in (*restores, (at_third, third, "/root/three")):
        host.run("hourglass", "files", "restore", *repo, "--at", at, "/srv/protected/docs",
                 "--to", out)  # fmt: skip
        assert host.path(out).joinpath("docs", "report.bin").read_bytes() == expected
    status = host.run("hourglass", "agent", "status", "--config", CONFIG)
    assert "/srv/protected" in status.stdout
    assert host.path("/var/lib/hourglass/agent").is_dir()  # the agent's default state

    # An upgrade (here the same version again) rebuilds the venv; the journal goes on.
    host.run("apt-get", "install", "-y", "-q", "--reinstall", f"/tmp/{package.name}")
    assert versions() == 3
    # Remove: the venv and the wrapper go, the configuration and the agent's state stay.
    host.run("apt-get", "remove", "-y", "-q", "hourglass-agent")
    assert not host.path("/usr/lib/hourglass-agent").exists()
    assert not host.path("/usr/bin/hourglass").exists()
    assert host.path(CONFIG).exists()
    assert host.path("/var/lib/hourglass/agent").is_dir()
    # Purge: they go too.
    host.run("apt-get", "purge", "-y", "-q", "hourglass-agent")
    assert not host.path("/var/lib/hourglass/agent").exists()
    assert not host.path(CONFIG).exists()
    assert not host.path("/etc/hourglass/agent.toml.example").exists()
    # The backups and the passphrase that opens them are the user's: never purged.
    assert secret.read_text() == "stock debian horse\n"
    assert host.path("/srv/repo").is_dir()
