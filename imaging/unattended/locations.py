"""Making a location of the orders (LABEL=, UUID=, /dev/..., nfs://, smb://, http(s)://)
available as a directory, and undoing it afterwards. (An s3:// repository is no directory:
:func:`imaging.unattended.run.carry_out` reaches it through its store.)"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import secrets
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from imaging.disks import mounts
from imaging.disks.discover import list_disks
from imaging.errors import HourglassError, NotFound, UsageError
from imaging.mounts import locations as places
from imaging.mounts.locations import Location
from imaging.mounts.mount import unmount
from imaging.process import run

MOUNT_ROOT = Path("/run/hourglass/unattended")


@dataclass
class Mounted:
    directory: Path  # the location's path, inside its mount
    disks: set[str] = field(default_factory=set)  # kernel names of the disks it lives on


class Locations(contextlib.AbstractContextManager["Locations"]):
    """Mounts what the orders name (through :mod:`imaging.mounts.locations`, as the app does);
    everything it mounted is unmounted on exit."""

    def __init__(self, credentials: tuple[str, str] = ("", "")) -> None:
        self._mounted: list[Location] = []
        self._http: list[str] = []
        self.credentials = credentials  # (username, password) for smb://

    def __exit__(self, *_: object) -> None:
        for mountpoint in reversed(self._http):
            with contextlib.suppress(HourglassError, OSError):
                unmount(mountpoint, remove=True)
        for location in reversed(self._mounted):
            try:
                places.unmount(location)
            except (HourglassError, OSError):
                # Busy, or its drive went mid-run: detached lazily, so no dead mount stays.
                with contextlib.suppress(HourglassError, OSError):
                    places.release_lost(location)
        self._mounted.clear()
        self._http.clear()

    def _keep(self, location: Location) -> str:
        if location.mounted_by_us:
            self._mounted.append(location)
        return location.mountpoint

    def directory(self, location: Location, *, writable: bool) -> Mounted:
        """The directory ``location`` names, mounted if it has to be."""
        if location.kind == "path":
            return Mounted(Path(location.path), _disks_of(location.path))
        if location.kind in ("label", "uuid", "partition"):
            device, fstype = _partition_of(location)
            root = self._keep(places.mount_partition(device, fstype, writable=writable))
            name = os.path.basename(os.path.realpath(device))
            return Mounted(_inside(root, location.path), mounts.disks_below(name))
        url = urllib.parse.urlsplit(location.source)
        if location.kind in ("nfs", "smb"):
            username, password = self.credentials
            share = places.Share(location.kind, url.hostname or "", url.path, username=username)
            root = self._keep(places.mount_share(share, password=password, writable=writable))
            return Mounted(Path(root))
        if location.kind == "http":
            if writable:
                raise UsageError(f"{location.source} is read-only: it can serve restores only.")
            MOUNT_ROOT.mkdir(parents=True, exist_ok=True)
            root = str(MOUNT_ROOT / secrets.token_hex(4))
            os.makedirs(root)
            run(["httpdirfs", location.source, root])
            self._http.append(root)
            return Mounted(Path(root))
        raise UsageError(f"Cannot use the location {location.describe()}.")

    def file_path(self, location: Location) -> Path:
        """The path of the file at ``location`` on this machine (its drive or share mounted,
        read-only, until the end of the run): for what a library reads itself (an AWS
        credentials file, a CA certificate). Not for http(s):// (nothing to mount)."""
        if location.kind == "http":
            raise UsageError(
                f"{location.source}: this file must be on a drive or a share "
                "(LABEL=x:/path, UUID=x:/path, /dev/...:/path, nfs://, smb://), not at a URL."
            )
        if location.kind == "path":
            return Path(location.path)
        parent = dataclasses.replace(location, path=str(Path(location.path).parent))
        return self.directory(parent, writable=False).directory / Path(location.path).name

    def read_file(self, location: Location) -> bytes:
        """The content of a small file (a passphrase or config file) at ``location``."""
        if location.kind == "http":
            try:
                with urllib.request.urlopen(location.source, timeout=30) as response:  # noqa: S310
                    return bytes(response.read(1 << 20))
            except OSError as e:
                raise NotFound(f"Cannot fetch {location.source}: {e}.") from e
        path = self.file_path(location)
        try:
            return path.read_bytes()
        except OSError as e:
            raise NotFound(f"Cannot read {location.describe()}: {e.strerror}.") from e


def _inside(root: str, path: str) -> Path:
    relative = Path(path.lstrip("/"))
    if ".." in relative.parts:
        raise UsageError(f"The path {path} must not contain '..'.")
    return Path(root) / relative


def _partition_of(location: Location) -> tuple[str, str]:
    """The device and filesystem type a LABEL=, UUID= or /dev/ location names."""
    for disk in list_disks(used=False):
        for partition in disk.partitions:
            if (
                (location.kind == "label" and partition.label == location.source)
                or (
                    location.kind == "uuid" and partition.fs_uuid.lower() == location.source.lower()
                )
                or (
                    location.kind == "partition"
                    and os.path.realpath(location.source) == os.path.realpath(partition.device)
                )
            ):
                if not partition.fstype:
                    raise UsageError(f"{location.describe()}: the partition has no filesystem.")
                return partition.device, partition.fstype
    # A drive formatted without a partition table (a "superfloppy" USB disk), or a device the
    # discovery did not list: ask blkid.
    device = location.source
    if location.kind in ("label", "uuid"):
        token = f"{location.kind.upper()}={location.source}"
        found = run(["blkid", "-o", "device", "-t", token], check=False).stdout.decode().split()
        device = found[0] if found else ""
    if device and os.path.exists(device):
        fstype = run(["blkid", "-p", "-o", "value", "-s", "TYPE", device], check=False)
        if fstype.stdout.strip():
            return device, fstype.stdout.decode().strip()
    raise NotFound(f"No partition matches {location.describe()}.")


def _disks_of(path: str) -> set[str]:
    try:
        return mounts.disks_of_path(path)
    except OSError:
        return set()
