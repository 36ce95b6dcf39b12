"""The one object every build step takes: where things are, and what is being built."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from build.vendor import Vendor
from imaging import __version__
from imaging.process import run

REPOSITORY = Path(__file__).resolve().parent.parent
MIRROR = "http://deb.debian.org/debian"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
SUITE = "bookworm"
COMPONENTS = ("main", "non-free-firmware")


def source_date_epoch(repository: Path) -> int:
    """SOURCE_DATE_EPOCH: from the environment, else the last commit, else now."""
    if os.environ.get("SOURCE_DATE_EPOCH", "").isdigit():
        return int(os.environ["SOURCE_DATE_EPOCH"])
    if (repository / ".git").exists() and shutil.which("git"):
        result = run(["git", "-C", repository, "log", "-1", "--format=%ct"], check=False)
        if result.returncode == 0 and result.stdout.strip().isdigit():
            return int(result.stdout.strip())
    return int(time.time())


@dataclass
class Context:
    """Paths are properties of ``repository`` and ``work``; steps record their keys here."""

    vendor: Vendor
    repository: Path = REPOSITORY
    work: Path = REPOSITORY / "build" / "work"
    dist: Path = REPOSITORY / "dist"
    version: str = __version__
    epoch: int = 0
    mirror: str = MIRROR
    security_mirror: str = SECURITY_MIRROR
    keys: dict[str, str] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    forced: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if not self.epoch:
            self.epoch = source_date_epoch(self.repository)

    @property
    def image(self) -> Path:
        """Image sources: package list, overlay, boot menu templates, vendor defaults."""
        return self.repository / "image"

    @property
    def cache(self) -> Path:
        return self.work / "cache"

    @property
    def stamps(self) -> Path:
        return self.work / "stamps"

    @property
    def wheels(self) -> Path:
        return self.work / "wheels"

    @property
    def root(self) -> Path:
        """The appliance's root filesystem being assembled."""
        return self.work / "root"

    @property
    def live(self) -> Path:
        """Kernel, initrd and squashfs: shared by the ISO, the PXE bundle and provisioning."""
        return self.work / "live"

    @property
    def squashfs(self) -> Path:
        return self.live / "filesystem.squashfs"

    @property
    def kernel(self) -> Path:
        return self.live / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.live / "initrd.img"

    @property
    def iso_tree(self) -> Path:
        return self.work / "iso"

    @property
    def name(self) -> str:
        return f"{self.vendor.slug}-{self.version}"

    @property
    def iso(self) -> Path:
        return self.dist / f"{self.name}-amd64.iso"

    @property
    def pxe(self) -> Path:
        return self.dist / f"{self.name}-pxe"

    @property
    def checksums(self) -> Path:
        return self.dist / "SHA256SUMS"

    def environment(self) -> dict[str, str]:
        """Variables every build tool gets: reproducible dates, no locale surprises."""
        return {"SOURCE_DATE_EPOCH": str(self.epoch), "LC_ALL": "C.UTF-8", "TZ": "UTC"}
