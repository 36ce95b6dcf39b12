"""`hourglass check`: every location of a repository listed and compared, without the key
(docs/FORMAT.md, "Repositories over several locations").

Without reading data: each member's names and sizes (on an ``s3://`` member from the
listing, and every pack's listed size against its pack index) against the other members'.
With ``read_percent``: a rolling share of the objects read on every member and each copy's
or shard's own checksum checked. With ``repair``: what a member lacks or holds damaged is
rebuilt from the others and written to it (or to a replacement location).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import blake3

from imaging.errors import HourglassError, UsageError
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec, storage
from imaging.repository.redundant import (
    DESCRIPTOR,
    SHARD_OVERHEAD,
    Descriptor,
    RedundantStore,
    encode_shards,
    member_store,
    refuse_used,
)
from imaging.repository.s3store import S3Options, S3Store
from imaging.repository.storage import Kind, LocalStore, Name, Store, object_key
from imaging.repository.store import LAYOUT, load_config
from imaging.repository.verify import verify_keyless
from imaging.units import count

CHECKED = (Kind.CONFIG, Kind.KEYS, Kind.CHUNKS, Kind.INDEXES, Kind.SNAPSHOTS)
"""What must be on every member, in the order a repair writes it (manifests last)."""
CHECK_STATE = Name(Kind.VERIFY, "check")
READERS = 8
"""Objects read at once by --read-data."""
VOTED_KINDS = (Kind.CONFIG, Kind.KEYS)
"""Objects without a checksum of their own: each member's copy is compared with the others."""
_ORDER = {kind: n for n, kind in enumerate(CHECKED)}


@dataclass
class LocationReport:
    """One location: what it holds and what is wrong with it."""

    index: int | None
    """The member number; None for a repository of one location."""
    location: str
    objects: int = 0
    unreachable: str | None = None
    missing: list[str] = field(default_factory=list)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    rebuilt: list[str] = field(default_factory=list)
    read: int = 0
    repair_error: str | None = None

    @property
    def ok(self) -> bool:
        if self.repair_error is not None:
            return False
        broken = set(self.missing) | {name for name, _ in self.damaged}
        return (self.unreachable is None or bool(self.rebuilt)) and broken <= set(self.rebuilt)

    def state(self) -> str:
        """``OK``, ``missing N objects``, ``damaged: ...`` (what the CLI prints)."""
        parts = []
        if self.unreachable is not None:
            parts.append(f"unreachable ({self.unreachable})")
        if self.missing:
            parts.append(f"missing {count(len(self.missing), 'object')}")
        if self.damaged:
            shown = ", ".join(f"{name} ({why})" for name, why in self.damaged[:8])
            more = f" and {len(self.damaged) - 8} more" if len(self.damaged) > 8 else ""
            parts.append(f"damaged: {shown}{more}")
        return "; ".join(parts) or "OK"


@dataclass
class CheckReport:
    scheme: str | None
    """``copies``, ``K+M``, or None for a repository of one location."""
    locations: list[LocationReport] = field(default_factory=list)
    objects: int = 0
    read: int = 0
    read_bytes: int = 0
    read_share: float | None = None
    repaired: bool = False

    @property
    def ok(self) -> bool:
        return all(loc.ok for loc in self.locations)

    @property
    def rebuilt(self) -> int:
        return sum(len(loc.rebuilt) for loc in self.locations)


def check(
    store: Store,
    *,
    read_percent: float | None = None,
    repair: bool = False,
    replace: Mapping[int, str] | None = None,
    s3: S3Options | None = None,
    progress: ProgressCallback = no_progress,
) -> CheckReport:
    """Check ``store`` (a set, or a repository of one location); see the module docstring."""
    if read_percent is not None and not 0 < read_percent <= 100:
        raise UsageError(f"--read-data={read_percent:g}: a share from 0 to 100 percent.")
    if replace and not repair:
        raise UsageError("--replace rebuilds a member: it needs --repair.")
    if not isinstance(store, RedundantStore):
        if replace or repair:
            raise UsageError(
                f"{store.describe()} is one location: there is nothing to repair it from.",
                "Redundancy comes from `hourglass init --redundancy copies|K+M LOC1 LOC2 ...`.",
            )
        return _check_plain(store, read_percent, progress)
    return _check_set(store, read_percent, repair, replace or {}, s3, progress)


# --- one location ---------------------------------------------------------------------------


def _inventory(store: Store) -> dict[Name, int]:
    """Every object that must be checked, with its size."""
    found: dict[Name, int] = {}
    for kind in CHECKED:
        try:
            for info in store.list(kind):
                with contextlib.suppress(FileNotFoundError):  # removed while we listed
                    found[info.name] = info.size
        except FileNotFoundError:
            continue  # no keys/ in an unencrypted repository; a lost kind shows as missing
    return found


def _pack_damage(store: Store) -> dict[Name, str]:
    """Chunks in packs that are missing or of the wrong size (an S3 location)."""
    if not isinstance(store, S3Store):
        return {}
    problems = store.pack_problems()
    damage: dict[Name, str] = {}
    for pack, why in problems.items():
        for chunk_id in store.chunks_in_packs([pack]):
            damage[storage.chunk(chunk_id)] = f"its pack {pack[:16]}… {why}"
    return damage


def _check_plain(
    store: Store, read_percent: float | None, progress: ProgressCallback
) -> CheckReport:
    load_config(store)
    report = CheckReport(None)
    location = LocationReport(None, store.describe())
    report.locations.append(location)
    meter = Meter("check", 1, progress, item=store.describe())
    found = _inventory(store)
    smallest = codec.CHUNK_HEADER.size + codec.TRAILER_SIZE
    for name, size in found.items():
        if name.kind in (Kind.CHUNKS, Kind.INDEXES, Kind.SNAPSHOTS) and size < smallest:
            location.damaged.append((object_key(name), f"truncated ({size} bytes)"))
    for name, why in _pack_damage(store).items():
        location.damaged.append((object_key(name), why))
    meter.add(1)
    meter.finish()
    location.objects = report.objects = len(found)
    if read_percent is not None:
        # One location has nothing to compare with: the read is the keyless verify.
        keyless = verify_keyless(store, progress=progress)
        location.read = report.read = keyless.checked
        report.read_bytes = keyless.checked_bytes
        report.read_share = 100.0
        location.damaged.extend((d.what, d.reason) for d in keyless.damage)
    return report


# --- a set ----------------------------------------------------------------------------------


def _check_set(
    store: RedundantStore,
    read_percent: float | None,
    repair: bool,
    replace: Mapping[int, str],
    s3: S3Options | None,
    progress: ProgressCallback,
) -> CheckReport:
    members = len(store.members)
    config, _ = load_config(store)
    kinds = LAYOUT + ((Kind.KEYS,) if config["encryption"] != "none" else ())
    for number, place in replace.items():
        if not 0 <= number < members:
            raise UsageError(f"--replace {number}=...: the set has members 0 to {members - 1}.")
        fresh = member_store(place, s3)
        refuse_used(fresh)
        fresh.create(kinds)
        shown = str(fresh.local_path) if fresh.local_path is not None else place
        store.replace_member(number, fresh, shown)
    report = CheckReport(store.descriptor.scheme)
    reports = [LocationReport(i, m.describe()) for i, m in enumerate(store.members)]
    report.locations = reports

    # 1. What each member holds (names and sizes), without reading data.
    meter = Meter("check", members, progress)

    def listed(number: int) -> dict[Name, int] | None:
        found = _list_member(store.members[number], reports[number])
        meter.add(1)
        return found

    # The members are listed at once: each waits on its own disk or network.
    with ThreadPoolExecutor(members, thread_name_prefix="check-list") as pool:
        held: list[dict[Name, int] | None] = list(pool.map(listed, range(members)))
    meter.finish()
    expected: set[Name] = set()
    for found in held:
        if found is not None:
            expected.update(found)
    report.objects = len(expected)
    if not any(found is not None for found in held):
        raise HourglassError(f"No member of {store.describe()} answers.")

    # 2. Every object on every member, with the size the others have.
    damaged: list[dict[Name, str]] = [{} for _ in range(members)]
    answering = [found for found in held if found is not None]
    for name in expected:
        sizes = [found.get(name) for found in answering]
        first = sizes[0]
        same = first is not None and sizes.count(first) == len(sizes)
        if same and (not store.sharded(name.kind) or (first or 0) >= SHARD_OVERHEAD + 1):
            continue  # the usual case: on every member, one size
        usual = Counter(size for size in sizes if size is not None).most_common(1)[0][0]
        for number, found in enumerate(held):
            if found is None:
                continue
            if name not in found:
                reports[number].missing.append(object_key(name))
            elif found[name] != usual:
                damaged[number][name] = f"{found[name]} bytes, the others {usual}"
            elif store.sharded(name.kind) and found[name] < SHARD_OVERHEAD + 1:
                damaged[number][name] = f"truncated ({found[name]} bytes)"
    for number, member in enumerate(store.members):
        if held[number] is not None:
            for name, why in _pack_damage(member).items():
                damaged[number].setdefault(name, why)
    descriptors_wrong = bool(replace)
    for number, member in enumerate(store.members):
        if held[number] is None:
            continue
        wrong = _descriptor_problem(store.descriptor, member, number)
        if wrong is not None:
            damaged[number][DESCRIPTOR] = wrong
            descriptors_wrong = True

    # 3. A rolling share of the data, read and checked on every member.
    if read_percent is not None:
        ordered = sorted(expected, key=object_key)
        _read_share(store, ordered, held, damaged, read_percent, report, progress)
    for number, problems in enumerate(damaged):
        reports[number].damaged.extend(
            (object_key(name), why) for name, why in sorted(problems.items())
        )
    every = sorted(object_key(name) for name in expected)
    for number, location in enumerate(reports):
        location.missing = every if held[number] is None else sorted(location.missing)

    # 4. Rebuild what is missing or damaged from the other members.
    if repair:
        report.repaired = True
        for number in range(members):
            _repair_member(
                store, number, held[number], expected, damaged[number], reports, kinds, progress
            )
        if descriptors_wrong or any(loc.unreachable for loc in reports):
            failed = store.write_descriptors()
            for number, location in enumerate(reports):
                if number in failed:
                    location.repair_error = location.repair_error or (
                        f"the set descriptor cannot be written: {failed[number]}"
                    )
                elif DESCRIPTOR in damaged[number] and location.repair_error is None:
                    location.rebuilt.append(object_key(DESCRIPTOR))
    return report


def _list_member(member: Store, location: LocationReport) -> dict[Name, int] | None:
    try:
        if not member.reachable():
            location.unreachable = "the location does not exist"
            return None
        found = _inventory(member)
    except (OSError, HourglassError) as e:
        location.unreachable = str(getattr(e, "strerror", None) or getattr(e, "message", e))
        return None
    location.objects = len(found)
    return found


def _descriptor_problem(descriptor: Descriptor, member: Store, number: int) -> str | None:
    try:
        own, index = Descriptor.decode(member.get(DESCRIPTOR), member.describe(DESCRIPTOR))
    except FileNotFoundError:
        return "missing"
    except (OSError, HourglassError) as e:
        return str(getattr(e, "message", e))
    if own.set_id != descriptor.set_id:
        return f"names another set ({own.set_id})"
    if index != number:
        return f"says this is member {index}, not {number}"
    if own.generation < descriptor.generation or own.members != descriptor.members:
        return "names an old membership"
    return None


def _read_share(
    store: RedundantStore,
    ordered: list[Name],
    held: list[dict[Name, int] | None],
    damaged: list[dict[Name, str]],
    percent: float,
    report: CheckReport,
    progress: ProgressCallback,
) -> None:
    """Read ``percent`` of the objects on every member, after where the last run stopped."""
    cursor = _load_cursor(store)
    start = 0
    if cursor is not None:
        start = next((n for n, name in enumerate(ordered) if object_key(name) > cursor), 0)
    count = min(len(ordered), math.ceil(len(ordered) * percent / 100))
    share = [ordered[(start + n) % len(ordered)] for n in range(count)] if ordered else []
    report.read_share = percent
    meter = Meter("check data", len(share), progress)
    known = [set(problems) for problems in damaged]  # found damaged already: not read again

    def read_one(name: Name) -> list[tuple[int, str | None, int, bytes | None]]:
        """(member, problem, bytes read, digest to compare) for each member's copy."""
        results: list[tuple[int, str | None, int, bytes | None]] = []
        for number, member in enumerate(store.members):
            found = held[number]
            if found is None or name not in found or name in known[number]:
                continue
            try:
                data = member.get(name)
            except FileNotFoundError:
                results.append((number, "vanished while checked", 0, None))
                continue
            except (OSError, HourglassError) as e:
                why = getattr(e, "strerror", None) or getattr(e, "message", None) or e
                results.append((number, f"unreadable ({why})", 0, None))
                continue
            problem = store.check_copy(name, data, number)
            digest = None
            if problem is None and not store.sharded(name.kind) and name.kind in VOTED_KINDS:
                digest = blake3.blake3(data).digest()
            results.append((number, problem, len(data), digest))
        meter.add(1)
        return results

    # Several objects at once: an S3 member answers each ranged GET after a round trip.
    with ThreadPoolExecutor(READERS, thread_name_prefix="check-read") as pool:
        for name, results in zip(share, pool.map(read_one, share), strict=True):
            digests: dict[int, bytes] = {}
            for number, problem, size, digest in results:
                if size:
                    report.read += 1
                    report.read_bytes += size
                if problem is not None:
                    damaged[number][name] = problem
                elif digest is not None:
                    digests[number] = digest
            if digests:  # copies without a checksum (config, key slots): the majority wins
                usual = Counter(digests.values()).most_common(1)[0][0]
                for number, digest in digests.items():
                    if digest != usual:
                        damaged[number][name] = "differs from the other copies"
    meter.finish()
    if share:
        last = object_key(share[-1])
        state = json.dumps({"cursor": last}).encode()
        for member in store.members:
            with contextlib.suppress(OSError, HourglassError):
                member.put(CHECK_STATE, state)


def _load_cursor(store: RedundantStore) -> str | None:
    for member in store.members:
        with contextlib.suppress(OSError, HourglassError, ValueError, KeyError, TypeError):
            return str(json.loads(member.get(CHECK_STATE))["cursor"])
    return None


def _repair_member(
    store: RedundantStore,
    number: int,
    found: dict[Name, int] | None,
    expected: Iterable[Name],
    damaged: dict[Name, str],
    reports: list[LocationReport],
    kinds: tuple[Kind, ...],
    progress: ProgressCallback,
) -> None:
    location = reports[number]
    member = store.members[number]
    todo = {name for name in expected if found is None or name not in found}
    todo.update(name for name in damaged if name != DESCRIPTOR)
    if not todo:
        return
    if found is None and isinstance(member, LocalStore) and not member.reachable():
        # Not made again where it was: an unmounted drive's mount point would get the copy
        # (on the system disk). The person names the place: --replace N=DIRECTORY.
        location.repair_error = (
            f"{member.path} does not exist (a drive that is not mounted?). Mount it, or "
            f"rebuild the member with --replace {number}=DIRECTORY"
        )
        return
    try:
        if found is None:
            member.create(kinds)
        if isinstance(member, S3Store):
            # A shard in a pack cannot be replaced: drop the pack, write all it held again.
            bad = [n for n in todo if n.kind is Kind.CHUNKS and n in damaged]
            packs = _packs_of(member, [bytes.fromhex(n.key) for n in bad])
            if packs:
                ids = member.chunks_in_packs(packs)
                member.drop_packs(packs)
                todo.update(storage.chunk(i) for i in ids)
        lost: list[str] = []
        meter = Meter("repair", len(todo), progress, item=member.describe())
        for name in sorted(todo, key=lambda n: (_ORDER.get(n.kind, 0), object_key(n))):
            meter.add(1)
            try:
                data = store.read(name, exclude={number}, note=False)
            except OSError:
                lost.append(object_key(name))  # too few good copies or shards elsewhere
                continue
            if store.sharded(name.kind):
                piece = encode_shards(data, store.k, store.m, name)[number]
            else:
                piece = data
            if name.kind is Kind.CHUNKS:
                if isinstance(member, LocalStore) and name in damaged:
                    member.delete(name, durable=False)
                member.put_chunk(bytes.fromhex(name.key), piece)
            else:
                member.put(name, piece)
            location.rebuilt.append(object_key(name))
        member.flush_chunks()
        member.sync_chunks()
        meter.finish()
        if lost:
            location.repair_error = (
                f"{count(len(lost), 'object')} cannot be rebuilt: the other members do not hold "
                f"enough good copies or shards of them ({', '.join(lost[:4])})"
            )
    except (OSError, HourglassError) as e:
        member.discard_chunks()
        location.repair_error = str(getattr(e, "strerror", None) or getattr(e, "message", e))
        location.rebuilt = []
    location.rebuilt.sort()


def _packs_of(member: S3Store, chunk_ids: list[bytes]) -> set[str]:
    packs = set()
    for chunk_id in chunk_ids:
        with contextlib.suppress(FileNotFoundError):
            packs.add(member._locate(chunk_id)[0])
    return packs
