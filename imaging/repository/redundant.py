"""A repository over several locations: whole copies on each, or K+M erasure shards
(docs/FORMAT.md, "Repositories over several locations").

:class:`RedundantStore` is a :class:`~imaging.repository.storage.Store` over member stores
(directories and ``s3://`` prefixes, mixed). The repository above it does not know: it puts,
gets and lists named objects, and the set writes every object to every member and reads it
back from enough of them. Every member holds a descriptor (``redundancy.json``) naming the
others, so opening any member opens the set (:func:`open_member`, which ``as_store`` calls).
"""

from __future__ import annotations

import contextlib
import errno
import json
import secrets
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import blake3

from imaging.errors import HourglassError, UsageError
from imaging.repository import leases
from imaging.repository.s3store import S3Options, S3Store, url_scheme
from imaging.repository.storage import (
    Kind,
    LocalStore,
    Name,
    ObjectInfo,
    Store,
    object_key,
)
from imaging.units import count

DESCRIPTOR = Name(Kind.REDUNDANCY)
DESCRIPTOR_VERSION = 1
COPIES = "copies"

SHARD_MAGIC = b"HGSH"
SHARD_VERSION = 1
# magic, version, K, M, shard number, object size (u64), BLAKE3 of the object's key.
SHARD_HEADER = struct.Struct("<4sBBBBQ32s")
TRAILER_SIZE = 32
SHARD_OVERHEAD = SHARD_HEADER.size + TRAILER_SIZE

SHARDED = frozenset({Kind.CHUNKS, Kind.INDEXES, Kind.TRASH})
"""Kinds a K+M set erasure-codes; the others (small) are copied whole to every member."""
TRAILERS = frozenset({Kind.CHUNKS, Kind.INDEXES, Kind.SNAPSHOTS, Kind.TRASH})
"""Kinds whose objects end in a plain BLAKE3 trailer: a copy can be checked alone."""
VOTED = frozenset({Kind.CONFIG, Kind.KEYS})
"""Small kinds without a checksum of their own, read from every member and compared."""
MAX_MEMBERS = 255


def parse_scheme(text: str) -> tuple[int, int] | None:
    """``"copies"`` -> None; ``"K+M"`` -> (K, M); UsageError for anything else."""
    if text == COPIES:
        return None
    k, plus, m = text.partition("+")
    if plus and k.isdigit() and m.isdigit() and int(k) >= 1 and int(m) >= 1:
        if int(k) + int(m) > MAX_MEMBERS:
            raise UsageError(f"--redundancy {text}: at most {MAX_MEMBERS} locations.")
        return int(k), int(m)
    raise UsageError(
        f"--redundancy {text!r} is neither copies nor K+M.",
        "Give copies (a whole copy on every location) or K+M, e.g. 4+2 (4 data and 2 parity "
        "shards: survives 2 lost locations).",
    )


@dataclass(frozen=True)
class Member:
    index: int
    location: str
    endpoint: str | None = None


@dataclass(frozen=True)
class Descriptor:
    """What every member's ``redundancy.json`` says (docs/FORMAT.md)."""

    set_id: str
    scheme: str
    k: int
    m: int
    members: tuple[Member, ...]
    generation: int = 1

    @property
    def copies(self) -> bool:
        return self.scheme == COPIES

    @property
    def needed(self) -> int:
        """How many members must answer for a read."""
        return 1 if self.copies else self.k

    def encode(self, member: int) -> bytes:
        record = {
            "version": DESCRIPTOR_VERSION,
            "set": self.set_id,
            "scheme": self.scheme,
            "k": self.k,
            "m": self.m,
            "generation": self.generation,
            "members": [
                {"index": m.index, "location": m.location}
                | ({"endpoint": m.endpoint} if m.endpoint else {})
                for m in self.members
            ],
            "member": member,
        }
        return json.dumps(record, indent=1).encode() + b"\n"

    @classmethod
    def decode(cls, data: bytes, where: str) -> tuple[Descriptor, int]:
        """(the descriptor, the member index it names as its own)."""
        try:
            record = json.loads(data)
            if record["version"] > DESCRIPTOR_VERSION:
                raise UsageError(
                    f"{where} is a set descriptor of version {record['version']}.",
                    "Use a newer Hourglass release.",
                )
            members = tuple(
                Member(int(m["index"]), str(m["location"]), m.get("endpoint"))
                for m in record["members"]
            )
            descriptor = cls(
                str(record["set"]),
                str(record["scheme"]),
                int(record["k"]),
                int(record["m"]),
                members,
                int(record.get("generation", 1)),
            )
            own = int(record["member"])
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            raise HourglassError(f"The set descriptor {where} is damaged.") from None
        if [m.index for m in members] != list(range(len(members))) or not 0 <= own < len(members):
            raise HourglassError(f"The set descriptor {where} is damaged (member numbers).")
        if len(members) != descriptor.k + descriptor.m:
            raise HourglassError(f"The set descriptor {where} is damaged (member count).")
        return descriptor, own


# --- shards ---------------------------------------------------------------------------------


def _zfec() -> Any:
    import zfec  # noqa: PLC0415 (only K+M sets need it: every other repository opens without)

    return zfec


def shard_length(size: int, k: int) -> int:
    return max(1, -(-size // k))


def object_tag(name: Name) -> bytes:
    """What a shard records of the object it belongs to: BLAKE3 of its key."""
    return blake3.blake3(object_key(name).encode()).digest()


def encode_shards(data: bytes | bytearray | memoryview, k: int, m: int, name: Name) -> list[bytes]:
    """The K+M shards of object ``name``, ``data`` (docs/FORMAT.md, "Shard")."""
    tag = object_tag(name)
    size = len(data)
    length = shard_length(size, k)
    padded = bytes(data) + bytes(k * length - size)
    pieces = tuple(padded[i * length : (i + 1) * length] for i in range(k))
    blocks = _zfec().Encoder(k, k + m).encode(pieces)
    shards = []
    for number, block in enumerate(blocks):
        head = SHARD_HEADER.pack(SHARD_MAGIC, SHARD_VERSION, k, m, number, size, tag)
        head += bytes(block)
        shards.append(head + blake3.blake3(head).digest())
    return shards


def check_shard(data: bytes, k: int, m: int, number: int, name: Name) -> str | None:
    """Why ``data`` is not a good shard ``number`` of object ``name`` in a K+M set (None:
    it is)."""
    if len(data) < SHARD_OVERHEAD + 1:
        return f"truncated ({len(data)} bytes)"
    if blake3.blake3(data[:-TRAILER_SIZE]).digest() != data[-TRAILER_SIZE:]:
        return "its checksum does not match (bit rot)"
    magic, version, sk, sm, snumber, size, tag = SHARD_HEADER.unpack_from(data)
    if magic != SHARD_MAGIC or version != SHARD_VERSION:
        return "not a shard"
    if tag != object_tag(name):
        return "a shard of another object"
    if (sk, sm, snumber) != (k, m, number):
        return f"shard {snumber} of {sk}+{sm}, not shard {number} of {k}+{m}"
    if len(data) != SHARD_OVERHEAD + shard_length(size, k):
        return "its length does not match its header"
    return None


def shard_size(data: bytes) -> int:
    return int(SHARD_HEADER.unpack_from(data)[5])


def decode_shards(shards: dict[int, bytes], k: int, m: int) -> bytes:
    """The object from K good shards (number -> shard)."""
    numbers = sorted(shards)[:k]
    size = shard_size(shards[numbers[0]])
    if numbers == list(range(k)):  # systematic: the data shards are the object
        body = b"".join(shards[n][SHARD_HEADER.size : -TRAILER_SIZE] for n in numbers)
    else:
        blocks = tuple(shards[n][SHARD_HEADER.size : -TRAILER_SIZE] for n in numbers)
        decoded = _zfec().Decoder(k, k + m).decode(blocks, tuple(numbers))
        body = b"".join(bytes(b) for b in decoded)
    return body[:size]


def trailer_ok(data: bytes) -> bool:
    return len(data) >= TRAILER_SIZE and blake3.blake3(data[:-TRAILER_SIZE]).digest() == bytes(
        data[-TRAILER_SIZE:]
    )


# --- the set --------------------------------------------------------------------------------


@dataclass
class Problem:
    """Something a read found on one member."""

    member: int
    location: str
    what: str
    reason: str

    def describe(self) -> str:
        return f"member {self.member} ({self.location}): {self.what} {self.reason}"


class _Lease(leases.LeaseHandle):
    """One lease of the set: the members' leases, updated together."""

    def __init__(self, handles: list[leases.LeaseHandle]) -> None:
        # No file of its own: the members' handles are the leases (no super().__init__).
        self.handles = handles
        self.record = handles[0].record if handles else {}

    @property
    def started(self) -> float:
        return min(h.started for h in self.handles)

    def update(self, **fields: object) -> None:
        for handle in self.handles:
            handle.update(**fields)


class RedundantStore(Store):
    """A repository over ``members`` as ``descriptor`` says (module docstring)."""

    def __init__(self, descriptor: Descriptor, members: Sequence[Store]) -> None:
        self.descriptor = descriptor
        self.members = list(members)
        self.problems: list[Problem] = []
        """What reads found missing or damaged on which member (also passed to on_problem)."""
        self.on_problem: Callable[[Problem], None] | None = None
        self._warned: set[int] = set()
        self._lock = threading.Lock()
        self._cache: tuple[Name, bytes] | None = None  # the last whole object got (indexes)

    def __repr__(self) -> str:
        return f"RedundantStore({self.describe()!r})"

    @property
    def k(self) -> int:
        return self.descriptor.k

    @property
    def m(self) -> int:
        return self.descriptor.m

    def sharded(self, kind: Kind) -> bool:
        return not self.descriptor.copies and kind in SHARDED

    # --- problems ---------------------------------------------------------------------------

    def _note(self, member: int, what: Name | str, reason: str) -> None:
        text = object_key(what) if isinstance(what, Name) else what
        problem = Problem(member, self.members[member].describe(), text, reason)
        with self._lock:
            self.problems.append(problem)
            first = member not in self._warned
            self._warned.add(member)
        if first and self.on_problem is not None:
            self.on_problem(problem)

    def degraded(self) -> list[str]:
        """One line per member reads found lacking, for results and messages."""
        seen: dict[int, list[Problem]] = {}
        for problem in self.problems:
            seen.setdefault(problem.member, []).append(problem)
        return [
            f"member {i} ({found[0].location}): {count(len(found), 'object')} missing or damaged, "
            f"e.g. {found[0].what} {found[0].reason}"
            for i, found in sorted(seen.items())
        ]

    def _write_failed(self, member: int, what: str, error: BaseException) -> HourglassError:
        reason = getattr(error, "strerror", None) or getattr(error, "message", None) or error
        return HourglassError(
            f"Cannot write {what} to member {member} of {self.describe()} "
            f"({self.members[member].describe()}): {reason}.",
            "Every member takes every write. Bring the member back, or rebuild it with "
            "`hourglass check --repair` (or put another location in its place with "
            f"`hourglass check --repair --replace {member}=LOCATION`).",
        )

    # --- where ------------------------------------------------------------------------------

    def describe(self, what: Name | Kind | None = None) -> str:
        where = ", ".join(m.describe() for m in self.members)
        text = f"the {self.descriptor.scheme} set ({where})"
        if what is None:
            return text
        return f"{object_key(what) if isinstance(what, Name) else str(what) + '/'} in {text}"

    @property
    def local_paths(self) -> tuple[Path, ...]:
        return tuple(path for member in self.members for path in member.local_paths)

    def reachable(self) -> bool:
        answering = 0
        for member in self.members:
            with contextlib.suppress(OSError, HourglassError):
                answering += bool(member.reachable())
        return answering >= self.descriptor.needed

    def unreachable(self) -> list[int]:
        """The members that do not answer now."""
        down = []
        for number, member in enumerate(self.members):
            try:
                ok = member.reachable()
            except (OSError, HourglassError):
                ok = False
            if not ok:
                down.append(number)
        return down

    def create(self, kinds: Iterable[Kind]) -> None:
        """Prepare every member (each must be empty) and give each its descriptor."""
        kinds = tuple(kinds)
        for member in self.members:
            refuse_used(member)
        for number, member in enumerate(self.members):
            member.create(kinds)
            member.put(DESCRIPTOR, self.descriptor.encode(number))

    def undo_create(self) -> None:
        for member in self.members:
            with contextlib.suppress(OSError, HourglassError):
                member.undo_create()

    def has_kind(self, kind: Kind) -> bool:
        return any(self._each(lambda s: s.has_kind(kind), default=False))

    def _each(self, call: Callable[[Store], Any], default: Any = None) -> list[Any]:
        results = []
        for member in self.members:
            try:
                results.append(call(member))
            except (OSError, HourglassError):
                results.append(default)
        return results

    # --- objects ----------------------------------------------------------------------------

    def put(self, name: Name, *parts: bytes | bytearray, if_absent: bool = False) -> bool:
        if self.sharded(name.kind):
            shards: list[bytes] = encode_shards(b"".join(parts), self.k, self.m, name)
        else:
            shards = [b"".join(parts)] * len(self.members)
        wrote = False
        for number, member in enumerate(self.members):
            try:
                wrote |= member.put(name, shards[number], if_absent=if_absent)
            except (OSError, HourglassError) as e:
                raise self._write_failed(number, object_key(name), e) from e
        with self._lock:
            if self._cache is not None and self._cache[0] == name:
                self._cache = None
        return wrote

    def get(self, name: Name) -> bytes:
        return self.read(name)

    def read(
        self,
        name: Name,
        *,
        exclude: Iterable[int] = (),
        getter: Callable[[Store, Name], bytes] | None = None,
        note: bool = True,
    ) -> bytes:
        """The whole object from enough members (not those in ``exclude``); each member that
        lacks it or holds it damaged is noted (:attr:`problems`)."""
        with self._lock:
            if getter is None and self._cache is not None and self._cache[0] == name:
                return self._cache[1]
        fetch = getter or (lambda store, n: store.get(n))
        skip = set(exclude)
        # Copies without a checksum are compared with each other: read them all.
        voted = not self.sharded(name.kind) and name.kind in VOTED
        wanted = len(self.members) if voted else self.k if self.sharded(name.kind) else 1
        missing = 0
        found: dict[int, bytes] = {}
        shard_sizes: dict[int, int] = {}
        for number, member in enumerate(self.members):
            if number in skip:
                continue
            try:
                data = fetch(member, name)
            except FileNotFoundError:
                missing += 1
                if note:
                    self._note(number, name, "is missing")
                continue
            except (OSError, HourglassError) as e:
                if note:
                    self._note(number, name, f"cannot be read ({_reason(e)})")
                continue
            problem = self.check_copy(name, data, number)
            if problem is None and self.sharded(name.kind):
                size = shard_size(data)
                if shard_sizes and size not in shard_sizes.values():
                    problem = "has another size than the other shards"
                shard_sizes[number] = size
            if problem is not None:
                if note:
                    self._note(number, name, problem)
                continue
            found[number] = data
            if len(found) >= wanted:
                break
        need = self.k if self.sharded(name.kind) else 1
        if len(found) < need:
            if missing and not found and missing == len(self.members) - len(skip):
                where = self.describe(name)
                raise FileNotFoundError(errno.ENOENT, f"{where} does not exist", where)
            where = self.describe(name)
            raise OSError(
                errno.EIO,
                f"{len(found)} good of the {need} copies or shards needed: too many members "
                "lack it or hold it damaged",
                where,
            )
        if self.sharded(name.kind):
            data = decode_shards(found, self.k, self.m)
        elif len(found) == 1:
            data = next(iter(found.values()))
        else:
            # Objects without a checksum of their own (config, key slots): the majority.
            votes = Counter(found.values())
            data = votes.most_common(1)[0][0]
            for number, copy in found.items():
                if copy != data and note:
                    self._note(number, name, "differs from the other copies")
        if getter is None and name.kind is Kind.INDEXES:
            with self._lock:
                self._cache = (name, data)
        return data

    def check_copy(self, name: Name, data: bytes, number: int) -> str | None:
        """Why member ``number``'s copy or shard of ``name`` is bad (None: it is good)."""
        if self.sharded(name.kind):
            return check_shard(data, self.k, self.m, number, name)
        if name.kind in TRAILERS and not trailer_ok(data):
            return "is damaged (its checksum does not match)"
        return None

    def get_range(self, name: Name, offset: int, length: int) -> bytes:
        if self.sharded(name.kind) or name.kind in TRAILERS:
            return self.read(name)[offset : offset + max(0, length)]
        return bytes(self._first(lambda s: s.get_range(name, offset, length), name))

    def _first(self, call: Callable[[Store], Any], name: Name) -> Any:
        missing = 0
        error: BaseException | None = None
        for number, member in enumerate(self.members):
            try:
                return call(member)
            except FileNotFoundError:
                missing += 1
                self._note(number, name, "is missing")
            except (OSError, HourglassError) as e:
                error = e
                self._note(number, name, f"cannot be read ({_reason(e)})")
        where = self.describe(name)
        if error is None:
            raise FileNotFoundError(errno.ENOENT, f"{where} does not exist", where)
        raise OSError(errno.EIO, f"no member answers ({_reason(error)})", where)

    def stat(self, name: Name) -> ObjectInfo:
        info: ObjectInfo = self._first(lambda s: s.stat(name), name)
        if name.kind is Kind.INDEXES and self.sharded(name.kind):
            return ObjectInfo(name, len(self.read(name)), info.mtime)
        if self.sharded(name.kind):
            # A chunk's size from its shard's: padded to K pieces, at most K-1 bytes over.
            return ObjectInfo(name, max(0, info.size - SHARD_OVERHEAD) * self.k, info.mtime)
        return info

    def exists(self, name: Name) -> bool:
        if name.kind is Kind.CHUNKS:
            # Stored only when every member has it: a backup then fills a gap left by a
            # member that was rebuilt or replaced (check --repair does the rest).
            return all(self._each(lambda s: s.exists(name), default=False))
        return any(self._each(lambda s: s.exists(name), default=False))

    def list(self, kind: Kind, prefix: str = "") -> Iterator[ObjectInfo]:
        seen: dict[Name, ObjectInfo] = {}
        listed = 0
        for member in self.members:
            try:
                infos = list(member.list(kind, prefix))
            except (OSError, HourglassError):
                continue
            listed += 1
            for info in infos:
                seen.setdefault(info.name, info)
        if not listed:
            where = self.describe(kind)
            raise FileNotFoundError(errno.ENOENT, f"{where} does not exist", where)
        for info in seen.values():
            if self.sharded(kind):
                yield ObjectInfo(info.name, max(0, info.size - SHARD_OVERHEAD) * self.k, info.mtime)
            else:
                yield info

    def delete(self, name: Name, *, durable: bool = True) -> bool:
        gone = False
        for number, member in enumerate(self.members):
            try:
                gone |= member.delete(name, durable=durable)
            except (OSError, HourglassError) as e:
                raise self._write_failed(number, f"the deletion of {object_key(name)}", e) from e
        return gone

    def move(
        self, source: Name, dest: Name, *, if_absent: bool = False, durable: bool = False
    ) -> bool:
        moved = False
        for member in self.members:
            moved |= member.move(source, dest, if_absent=if_absent, durable=durable)
        return moved

    def groups(self, kind: Kind) -> Iterator[ObjectInfo]:
        seen: dict[Name, ObjectInfo] = {}
        for results in self._each(lambda s: list(s.groups(kind)), default=[]):
            for info in results:
                seen.setdefault(info.name, info)
        yield from seen.values()

    def make_group(self, kind: Kind, group: str) -> None:
        for member in self.members:
            member.make_group(kind, group)

    def delete_group(self, kind: Kind, group: str) -> None:
        for member in self.members:
            member.delete_group(kind, group)

    def get_set_aside(self, name: Name) -> bytes:
        return self.read(name, getter=lambda store, n: store.get_set_aside(n), note=False)

    # --- leases -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self, kind: str) -> Iterator[leases.LeaseHandle]:
        """A lease on every member. A writer refuses to start while a member is down
        (docs/FORMAT.md: a snapshot must not be less redundant than the set)."""
        down = self.unreachable()
        if kind == "writer" and down:
            number = down[0]
            raise HourglassError(
                f"Member {number} of {self.describe()} ({self.members[number].describe()}) "
                "does not answer: a backup would not reach it.",
                "Bring it back, or rebuild it with `hourglass check --repair` (or "
                f"`hourglass check --repair --replace {number}=LOCATION`).",
            )
        with contextlib.ExitStack() as stack:
            handles = []
            for number, member in enumerate(self.members):
                if number in down:
                    continue
                if isinstance(member, LocalStore):
                    handles.append(stack.enter_context(leases.hold(member.leases_dir, kind)))
                else:
                    handles.append(stack.enter_context(member.lease(kind)))
            yield _Lease(handles)

    # --- the chunk batch --------------------------------------------------------------------

    def put_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        if self.descriptor.copies:
            shards = [data] * len(self.members)
        else:
            shards = encode_shards(data, self.k, self.m, Name(Kind.CHUNKS, chunk_id.hex()))
        wrote = False
        for number, member in enumerate(self.members):
            try:
                wrote |= member.put_chunk(chunk_id, shards[number])
            except (OSError, HourglassError) as e:
                raise self._write_failed(number, f"chunk {chunk_id.hex()}", e) from e
        return wrote

    def flush_chunks(self) -> None:
        for number, member in enumerate(self.members):
            try:
                member.flush_chunks()
            except (OSError, HourglassError) as e:
                raise self._write_failed(number, "new chunks", e) from e

    def discard_chunks(self) -> None:
        for member in self.members:
            member.discard_chunks()

    def sync_chunks(self) -> None:
        for member in self.members:
            member.sync_chunks()

    # --- membership -------------------------------------------------------------------------

    def write_descriptors(self) -> dict[int, str]:
        """Give every member that answers the current descriptor (after a replacement);
        returns the members that could not take it, and why (a member down keeps its old
        descriptor, which the higher generation of the others outvotes on open)."""
        failed = {}
        for number, member in enumerate(self.members):
            try:
                member.put(DESCRIPTOR, self.descriptor.encode(number))
            except (OSError, HourglassError) as e:
                failed[number] = _reason(e)
        return failed

    def replace_member(self, number: int, store: Store, location: str) -> None:
        """Put ``store`` (empty) in member ``number``'s place; the caller fills it and then
        :meth:`write_descriptors`."""
        members = list(self.descriptor.members)
        members[number] = Member(number, location, _endpoint(store))
        self.descriptor = replace(
            self.descriptor, members=tuple(members), generation=self.descriptor.generation + 1
        )
        self.members[number] = store


def _reason(error: BaseException) -> str:
    return str(getattr(error, "strerror", None) or getattr(error, "message", None) or error)


def _endpoint(store: Store) -> str | None:
    if isinstance(store, S3Store):
        return str(store.client.meta.endpoint_url)
    return None


def refuse_used(store: Store) -> None:
    """Refuse a location that already holds something (a set is made of empty locations)."""
    root = store.local_path
    if root is not None and root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UsageError(f"{root} exists and is not an empty directory.")
    if isinstance(store, S3Store) and store.reachable():
        with contextlib.suppress(FileNotFoundError):
            listing = store.client.list_objects_v2(
                Bucket=store.bucket, Prefix=store._key(""), MaxKeys=1
            )
            if listing.get("KeyCount", 0):
                raise UsageError(f"{store.url} is not empty.", "Choose another bucket or prefix.")


def member_store(location: str, s3: S3Options | None = None, endpoint: str | None = None) -> Store:
    """The plain store of one member's location (never a set)."""
    scheme = url_scheme(location)
    if scheme == "s3":
        options = s3 or S3Options()
        if options.endpoint is None and endpoint:
            options = replace(options, endpoint=endpoint)
        return S3Store.from_url(location, options)
    if scheme is not None:
        raise UsageError(
            f"{location}: Hourglass does not know {scheme}:// repository locations.",
            "A repository is a directory (mount network shares first) or s3://BUCKET/PREFIX.",
        )
    return LocalStore(Path(location).absolute())


def new_set(scheme: str, locations: Sequence[str], s3: S3Options | None = None) -> RedundantStore:
    """A set not created yet (``Repository.init`` creates it): ``scheme`` is ``copies`` or
    ``K+M``, with ``locations`` in member order."""
    shape = parse_scheme(scheme)
    if shape is None:
        if len(locations) < 2:
            raise UsageError(
                f"--redundancy copies needs at least 2 locations; {len(locations)} given."
            )
        k, m = 1, len(locations) - 1
    else:
        k, m = shape
        if len(locations) != k + m:
            raise UsageError(
                f"--redundancy {scheme} needs exactly {k + m} locations (one per shard); "
                f"{len(locations)} given."
            )
    if len(set(locations)) != len(locations):
        raise UsageError("A location is named twice: every member needs its own.")
    stores = [member_store(location, s3) for location in locations]
    members = tuple(
        Member(i, _location(store, location), _endpoint(store))
        for i, (store, location) in enumerate(zip(stores, locations, strict=True))
    )
    descriptor = Descriptor(secrets.token_hex(16), scheme, k, m, members)
    return RedundantStore(descriptor, stores)


def _location(store: Store, given: str) -> str:
    """How a member is named in the descriptor: a directory as an absolute path."""
    return str(store.local_path) if store.local_path is not None else given


def open_member(store: Store, s3: S3Options | None = None) -> Store:
    """The set ``store`` is a member of, or ``store`` itself when it is a plain repository."""
    try:
        data = store.get(DESCRIPTOR)
    except OSError:  # no descriptor (or an unreachable location: opening says why)
        return store
    descriptor, own = Descriptor.decode(data, store.describe(DESCRIPTOR))
    if isinstance(store, LocalStore) and not store.path.is_absolute():
        store = LocalStore(store.path.absolute())  # named in messages as the others are
    members = _members(descriptor, own, store, s3)
    # The newest membership among the members that answer wins (docs/FORMAT.md).
    for number, member in enumerate(members):
        if number == own:
            continue
        try:
            other, _ = Descriptor.decode(member.get(DESCRIPTOR), member.describe(DESCRIPTOR))
        except (OSError, HourglassError):
            continue
        if other.set_id == descriptor.set_id and other.generation > descriptor.generation:
            descriptor = other
            members = _members(descriptor, own, store, s3, keep_own=False)
    return RedundantStore(descriptor, members)


def _members(
    descriptor: Descriptor, own: int, store: Store, s3: S3Options | None, keep_own: bool = True
) -> list[Store]:
    return [
        store if (m.index == own and keep_own) else member_store(m.location, s3, m.endpoint)
        for m in descriptor.members
    ]
