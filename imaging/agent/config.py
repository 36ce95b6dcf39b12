"""The agent's configuration, `/etc/hourglass/agent.toml` (the keys are a contract)."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from imaging.errors import UsageError
from imaging.repository.s3store import S3Options, parse_url, url_scheme
from imaging.repository.throttle import Timetable, Window, parse_timetable, parse_window

DEFAULT_CONFIG = "/etc/hourglass/agent.toml"
DEFAULT_STATE_DIR = "/var/lib/hourglass/agent"
T = TypeVar("T")


@dataclass(frozen=True)
class OffsiteTarget:
    """One off-site mirror: a directory or ``s3://BUCKET[/PREFIX]``, and for s3 how to reach
    it (endpoint, CA file, credentials file: files, never secrets in agent.toml)."""

    location: str
    s3: S3Options = field(default_factory=S3Options)


@dataclass(frozen=True)
class OffsiteConfig:
    """``[offsite]``: where the agent copies the repository (``hourglass copy``), when, and
    how fast."""

    targets: tuple[OffsiteTarget, ...] = ()
    window: Window | None = None
    """Copies run only inside it; None: at any time."""
    bwlimit: Timetable | None = None
    """The upload and download limits of the copies (rclone's timetable); None: none."""
    every: float = 600.0
    """Inside the window, a target is looked at again this many seconds after a pass."""
    retry: float = 60.0
    """A failed target is tried again this much later, doubled after each failure (up to
    an hour)."""


@dataclass(frozen=True)
class AgentConfig:
    location: str
    passphrase_file: str | None
    paths: tuple[str, ...]
    exclude: tuple[str, ...] = ()
    interval: float = 5.0
    """At most one version of a file per this many seconds."""
    commit_interval: float = 1.0
    """A segment is committed at most this often while there are events."""
    settle: float = 0.2
    """How long after a close the copy waits (renames arrive as two events)."""
    state_dir: str = DEFAULT_STATE_DIR
    compact_after: float = 300.0
    """Segments that ended this many seconds ago are merged into compacted ones."""
    compact_every: float = 60.0
    """How often the running agent looks for segments to merge."""
    images: dict[str, Any] = field(default_factory=dict)
    offsite: OffsiteConfig = field(default_factory=OffsiteConfig)
    source: str = DEFAULT_CONFIG

    def passphrase(self) -> str | None:
        if self.passphrase_file is None:
            return None
        try:
            return Path(self.passphrase_file).read_text().rstrip("\n")
        except OSError as e:
            raise UsageError(
                f"Cannot read the passphrase file {self.passphrase_file}: {e.strerror}."
            ) from e


def _strs(value: Any, key: str, source: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise UsageError(f"{source}: {key} must be a list of strings.")
    return tuple(value)


def _number(
    table: dict[str, Any],
    key: str,
    default: float,
    source: str,
    name: str = "protect",
    *,
    least: float = 0.0,
) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise UsageError(f"{source}: [{name}] {key} must be a number of seconds.")
    if value < least:
        raise UsageError(f"{source}: [{name}] {key} = {value} is too short: at least {least:g} s.")
    return float(value)


def load_config(path: str | None = None) -> AgentConfig:
    """Read the configuration file (``path``, else the default)."""
    source = path or DEFAULT_CONFIG
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise UsageError(
            f"The agent's configuration {source} does not exist.",
            'It needs at least [repository] location = "..." and [protect] paths = [...].',
        ) from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"{source} is not valid TOML: {e}.") from None
    repository = data.get("repository", {})
    protect = data.get("protect", {})
    location = repository.get("location")
    if not isinstance(location, str) or not location:
        raise UsageError(f'{source}: [repository] location = "..." is missing.')
    paths = _strs(protect.get("paths", []), "[protect] paths", source)
    if not paths:
        raise UsageError(f"{source}: [protect] paths names nothing to protect.")
    for p in paths:
        if not os.path.isabs(p):
            raise UsageError(f"{source}: [protect] paths: {p} is not an absolute path.")
    passphrase_file = repository.get("passphrase_file")
    agent = data.get("agent", {})
    return AgentConfig(
        location=location,
        passphrase_file=passphrase_file if isinstance(passphrase_file, str) else None,
        paths=tuple(os.path.normpath(p) for p in paths),
        exclude=_strs(protect.get("exclude", []), "[protect] exclude", source),
        interval=_number(protect, "interval", 5.0, source),
        commit_interval=_number(protect, "commit_interval", 1.0, source),
        settle=_number(protect, "settle", 0.2, source),
        state_dir=str(agent.get("state_dir", DEFAULT_STATE_DIR)),
        compact_after=_number(agent, "compact_after", 300.0, source, "agent"),
        compact_every=_number(agent, "compact_every", 60.0, source, "agent"),
        images=dict(data.get("images", {})),
        offsite=_offsite(data.get("offsite", {}), location, source),
        source=source,
    )


_S3_KEYS = ("endpoint", "ca_file", "credentials")
_OFFSITE_KEYS = ("to", "window", "bwlimit", "every", "retry", *_S3_KEYS)
_SECRETS = ("access_key", "secret_key", "aws_access_key_id", "aws_secret_access_key")


def _offsite(table: Any, repository: str, source: str) -> OffsiteConfig:
    """``[offsite]`` checked: every value a location, window or timetable Hourglass reads
    (the parsers of ``hourglass copy --window --bwlimit``); nothing is contacted here."""
    if not isinstance(table, dict):
        raise UsageError(f"{source}: [offsite] must be a table.")
    _known_keys(table, _OFFSITE_KEYS, "[offsite]", source)
    defaults = _s3_keys(table, "[offsite]", source)
    to = table.get("to", [])
    if isinstance(to, str | dict):
        to = [to]
    if not isinstance(to, list):
        raise UsageError(f"{source}: [offsite] to must be a list of locations.")
    targets = []
    for number, item in enumerate(to, 1):
        key = f"[offsite] to, entry {number}"
        if isinstance(item, dict):
            _known_keys(item, ("location", *_S3_KEYS), key, source)
            location = item.get("location")
            own = _s3_keys(item, key, source)
        else:
            location, own = item, {}
        if not isinstance(location, str) or not location:
            raise UsageError(
                f"{source}: {key} is not a location.",
                'A target is "s3://BUCKET/PREFIX", a directory, or '
                '{ location = "s3://...", endpoint = "...", credentials = "FILE" }.',
            )
        targets.append(_target(location, {**defaults, **own}, bool(own), key, repository, source))
    locations = [t.location for t in targets]
    if len(set(locations)) != len(locations):
        raise UsageError(f"{source}: [offsite] to names a target twice.")
    window = table.get("window")
    bwlimit = table.get("bwlimit")
    return OffsiteConfig(
        targets=tuple(targets),
        window=_parsed(window, "window", parse_window, source) if window else None,
        bwlimit=_parsed(bwlimit, "bwlimit", parse_timetable, source) if bwlimit else None,
        # a pass looks at every target: at 0 s the copy thread would do nothing else
        every=_number(table, "every", 600.0, source, "offsite", least=1.0),
        retry=_number(table, "retry", 60.0, source, "offsite", least=0.5),
    )


def _known_keys(table: dict[str, Any], known: tuple[str, ...], where: str, source: str) -> None:
    for key in table:
        if key in _SECRETS:
            raise UsageError(
                f"{source}: {where} {key}: secrets are not kept in agent.toml.",
                'Name an AWS credentials file instead: credentials = "/etc/hourglass/s3" '
                "([default] aws_access_key_id, aws_secret_access_key; readable by root only).",
            )
        if key not in known:
            raise UsageError(
                f"{source}: {where} has no key {key!r}.", f"It takes {', '.join(known)}."
            )


def _s3_keys(table: dict[str, Any], where: str, source: str) -> dict[str, str]:
    found = {}
    for key in _S3_KEYS:
        value = table.get(key)
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise UsageError(f"{source}: {where} {key} must be a string.")
        if key == "endpoint":
            if url_scheme(value) not in ("http", "https"):
                raise UsageError(
                    f"{source}: {where} endpoint = {value!r} is not an http:// or https:// URL."
                )
        elif not os.path.isabs(value) or not os.path.isfile(value):
            raise UsageError(
                f"{source}: {where} {key} = {value!r}: no such file (an absolute path)."
            )
        found[key] = value
    return found


def _target(
    location: str,
    keys: dict[str, str],
    own_keys: bool,
    where: str,
    repository: str,
    source: str,
) -> OffsiteTarget:
    scheme = url_scheme(location)
    if scheme == "s3":
        try:
            parse_url(location)
        except UsageError as e:
            raise UsageError(f"{source}: {where}: {e.message}", e.hint) from None
        ca_file, credentials = keys.get("ca_file"), keys.get("credentials")
        return OffsiteTarget(
            location,
            S3Options(
                endpoint=keys.get("endpoint"),
                ca_file=Path(ca_file) if ca_file else None,
                credentials_file=Path(credentials) if credentials else None,
            ),
        )
    if scheme is not None:
        raise UsageError(
            f"{source}: {where}: {location}: Hourglass does not know {scheme}:// locations.",
            "A target is a directory (mount network shares first) or s3://BUCKET/PREFIX.",
        )
    if not os.path.isabs(location):
        raise UsageError(f"{source}: {where}: {location} is not an absolute path.")
    if own_keys:
        raise UsageError(
            f"{source}: {where}: {', '.join(_S3_KEYS)} are for s3:// targets, and {location} "
            "is a directory."
        )
    if url_scheme(repository) is None and os.path.realpath(location) == os.path.realpath(
        repository
    ):
        raise UsageError(
            f"{source}: {where}: {location} is the repository itself, not an off-site copy."
        )
    return OffsiteTarget(os.path.normpath(location))


def _parsed(value: Any, key: str, parse: Callable[[str], T], source: str) -> T:
    """``value`` read by ``parse`` (the parser of ``hourglass copy --KEY``), its error
    naming the file and the key."""
    if not isinstance(value, str):
        raise UsageError(f"{source}: [offsite] {key} must be a string.")
    try:
        return parse(value)
    except UsageError as e:
        message = e.message.removeprefix(f"--{key} ")
        raise UsageError(f"{source}: [offsite] {key}: {message}", e.hint) from None
