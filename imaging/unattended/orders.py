"""Orders for an unattended run: kernel parameters or a config file with the same keys.

    hourglass.run=backup|restore|verify|files-restore
    hourglass.source=  hourglass.target=   (device path, /dev/disk/by-id/..., or serial)
    hourglass.repo=    LABEL=x:/path | UUID=x:/path | /dev/...:/path | nfs://host/export/path
                       | smb://host/share/path | http(s)://... (read-only, restores)
                       | s3://BUCKET[/PREFIX] (an object store)
    hourglass.snapshot=latest|ID|YYYY-MM-DDTHH:MM:SS
    hourglass.passphrase_file=   (same location forms as the repository)
    hourglass.after=poweroff|reboot|shell|ui
    hourglass.config=  (a file on a drive in the location forms above, or an http(s) URL)

Additions of ours: hourglass.grow=1 and hourglass.new_ids=1 (restore), hourglass.paths=a,b
and hourglass.to= (files-restore), hourglass.partition=N, hourglass.read_data=1 (verify),
hourglass.credentials=LOCATION (for smb://: a file with username=/password= lines; for
s3://: an AWS credentials file, ``[default]`` with ``aws_access_key_id`` and
``aws_secret_access_key``), and for s3:// hourglass.s3_endpoint=URL (the object store's
endpoint; default AWS_ENDPOINT_URL, else Amazon S3) and hourglass.ca_file=LOCATION (a CA
certificate, PEM, to trust for the endpoint instead of the system's). LOCATION is a file in
the location forms above (LABEL=x:/path, UUID=x:/path, /dev/...:/path, a path, nfs://,
smb://), never a URL of the store itself. hourglass.lab=http://HOST:PORT (restore): join
the lab session served there (`hourglass lab serve`, whose network boot entry sets it); the
session gives the snapshot and the key, so no hourglass.repo is needed.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from imaging.errors import UsageError
from imaging.mounts.locations import Location

RUNS = ("backup", "restore", "verify", "files-restore")
AFTER = ("poweroff", "reboot", "shell", "ui")
PREFIX = "hourglass."
KNOWN = {
    "run",
    "source",
    "target",
    "repo",
    "snapshot",
    "passphrase_file",
    "after",
    "config",
    "grow",
    "new_ids",
    "paths",
    "to",
    "partition",
    "read_data",
    "credentials",
    "s3_endpoint",
    "ca_file",
    "lab",
}


_URL = re.compile(r"^(nfs|smb|https?|s3)://[^/\s]+(/\S*)?$")


def parse_location(text: str, *, key: str = "repo") -> Location:
    """``LABEL=x:/path``, ``UUID=x:/path``, ``/dev/sdb1:/path``, a URL or a plain path, as
    a :class:`Location` that is not mounted yet."""
    text = text.strip()
    m = re.match(r"^(LABEL|UUID)=([^:]+)(?::(/.*))?$", text)
    if m:
        return Location(m.group(1).lower(), m.group(2), m.group(3) or "/")
    m = re.match(r"^(/dev/[^:]+)(?::(/.*))?$", text)
    if m:
        return Location("partition", m.group(1), m.group(2) or "/")
    if _URL.match(text):
        scheme = text.split("://", 1)[0]
        return Location("http" if scheme.startswith("http") else scheme, text, "/")
    if text.startswith("s3://"):
        raise UsageError(
            f"hourglass.{key}={text!r} is not an object-store location.",
            "Write it as s3://BUCKET or s3://BUCKET/PREFIX.",
        )
    if text.startswith("/"):
        return Location("path", "", text)
    raise UsageError(
        f"hourglass.{key}={text!r} is not a location I understand.",
        "Use LABEL=x:/path, UUID=x:/path, /dev/sdX1:/path, nfs://host/export/path, "
        "smb://host/share/path, http(s)://... or (a repository) s3://BUCKET/PREFIX",
    )


@dataclass(frozen=True)
class Orders:
    run: str
    repo: Location | None
    source: str = ""
    target: str = ""
    snapshot: str = "latest"
    passphrase_file: Location | None = None
    after: str = "ui"
    grow: bool = False
    new_ids: bool = False
    paths: tuple[str, ...] = ()
    to: str = ""
    partition: int | None = None
    read_data: bool = False
    credentials: Location | None = None
    s3_endpoint: str = ""
    ca_file: Location | None = None
    lab: str = ""
    unknown: tuple[str, ...] = field(default_factory=tuple)


def parse_cmdline(text: str) -> dict[str, str]:
    """The ``hourglass.*`` keys of a kernel command line (quotes allowed, last one wins)."""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    result = {}
    for word in words:
        if word.startswith(PREFIX) and "=" in word:
            key, value = word[len(PREFIX) :].split("=", 1)
            result[key] = value
    return result


def parse_config(text: str) -> dict[str, str]:
    """A config file: ``key=value`` per line (``hourglass.`` prefix optional), # comments."""
    result = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise UsageError(f"Line {number} of the config file is not key=value: {raw!r}.")
        key, value = line.split("=", 1)
        key = key.strip().removeprefix(PREFIX)
        result[key] = value.strip().strip('"').strip("'")
    return result


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "yes", "true", "on")


def orders_from(keys: dict[str, str]) -> Orders:
    """Validate the keys; a mistake names the key and what it accepts."""
    run = keys.get("run", "")
    if run not in RUNS:
        raise UsageError(f"hourglass.run={run!r}: expected one of {', '.join(RUNS)}.")
    after = keys.get("after", "ui")
    if after not in AFTER:
        raise UsageError(f"hourglass.after={after!r}: expected one of {', '.join(AFTER)}.")
    lab = keys.get("lab", "").strip()
    if lab and (run != "restore" or not re.match(r"^http://[^/\s]+/?$", lab)):
        raise UsageError(
            f"hourglass.lab={lab!r}: a lab session is an http://HOST:PORT address, "
            "for hourglass.run=restore."
        )
    repo = parse_location(keys["repo"]) if keys.get("repo") else None
    if repo is None and not lab:
        raise UsageError("hourglass.repo is missing: where is the repository?")
    if repo is not None and repo.kind == "http" and run == "backup":
        raise UsageError("An http(s) repository is read-only: it can serve restores, not backups.")
    if repo is not None and repo.kind == "s3" and run == "files-restore":
        raise UsageError(
            "files-restore needs a repository directory: an s3:// repository serves backups, "
            "restores and verify."
        )
    for key in ("passphrase_file", "credentials", "ca_file", "config", "to"):
        if keys.get(key, "").startswith("s3://"):
            raise UsageError(f"hourglass.{key} is a file on a drive or a share, not in a bucket.")
    endpoint = keys.get("s3_endpoint", "").strip()
    if endpoint and not re.match(r"^https?://[^/\s]+/?$", endpoint):
        raise UsageError(
            f"hourglass.s3_endpoint={endpoint!r} is not an endpoint URL.",
            "Write it as https://host[:port] (or http://host:port).",
        )
    partition = keys.get("partition")
    if partition is not None and not partition.isdigit():
        raise UsageError(f"hourglass.partition={partition!r} is not a partition number.")
    paths = tuple(p for p in keys.get("paths", "").split(",") if p)
    if run == "files-restore" and (not paths or not keys.get("to")):
        raise UsageError("files-restore needs hourglass.paths=a,b and hourglass.to=LOCATION.")
    return Orders(
        run=run,
        repo=repo,
        source=keys.get("source", ""),
        target=keys.get("target", ""),
        snapshot=keys.get("snapshot", "latest") or "latest",
        passphrase_file=parse_location(keys["passphrase_file"], key="passphrase_file")
        if keys.get("passphrase_file")
        else None,
        after=after,
        grow=_flag(keys.get("grow")),
        new_ids=_flag(keys.get("new_ids")),
        paths=paths,
        to=keys.get("to", ""),
        partition=int(partition) if partition else None,
        read_data=_flag(keys.get("read_data")),
        credentials=parse_location(keys["credentials"], key="credentials")
        if keys.get("credentials")
        else None,
        s3_endpoint=endpoint,
        ca_file=parse_location(keys["ca_file"], key="ca_file") if keys.get("ca_file") else None,
        lab=lab.rstrip("/"),
        unknown=tuple(sorted(set(keys) - KNOWN)),
    )
