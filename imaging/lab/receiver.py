"""A lab receiver: one PC of the room restores the session's snapshot (docs/LAB.md).

It opens the repository through the server's HTTP (:class:`LabStore`, with the session's
key) and runs the same disk restore and read-back verify as ``hourglass restore``; only the
image data comes another way (:class:`MulticastFeed`): fragments of stored chunks from the
multicast, put together in any order, each chunk decoded and authenticated by its id before
a byte of it is written. Fragments a pass missed are fetched by HTTP when few are missing,
otherwise taken from the next pass; with no multicast for :data:`SILENT` seconds after the
session began, everything left comes by HTTP.
"""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import subprocess
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from imaging import jobs
from imaging.errors import HourglassError, IntegrityError
from imaging.image.restore import RestoreResult
from imaging.lab import datagram
from imaging.lab.client import LabClient, LabStore
from imaging.lab.session import Session, split_ids
from imaging.progress import Progress, ProgressCallback, no_progress
from imaging.repository import codec
from imaging.repository.keys import Keys
from imaging.repository.store import Repository

SILENT = 10.0
"""Seconds without multicast (once the session began) before the rest comes by HTTP."""
CONTACT = 60.0
"""Seconds a receiver keeps asking for the session before it gives up."""
TAIL = 0.02
"""At the end of a pass, a PC that lacks at most this share of its chunks (or 16) fetches
them by HTTP rather than wait a whole pass: the next pass may be long, for a slow PC."""
FETCHERS = 4
"""Chunks fetched by HTTP at once (the fill-in of a PC that gets no multicast)."""
TRIES = 3
REPORT_EVERY = 1.0
SO_RCVBUFFORCE = 33  # Linux; not in Python's socket module
PARTIAL_BYTES = 256 * 2**20
"""Chunks held in part (fragments waiting for the rest), at most this many bytes."""


@dataclass
class _Partial:
    raw: bytearray
    have: bytearray
    count: int = 0

    def gaps(self) -> list[tuple[int, int]]:
        """The byte spans of the missing fragments, neighbours joined."""
        spans: list[tuple[int, int]] = []
        for f, got in enumerate(self.have):
            if got:
                continue
            start, end = datagram.fragment_span(len(self.raw), f)
            if spans and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        return spans


@dataclass
class Counters:
    datagrams: int = 0
    highest: int = -1
    foreign: int = 0
    corrupt: int = 0
    repaired: int = 0
    by_http: int = 0
    by_multicast: int = 0
    unicast_after: float | None = None
    tails: int = 0


@dataclass
class ReceiverState:
    """What the receiver reports: its phase and progress."""

    phase: str = "joined"
    done: int = 0
    total: int = 0
    rate: float = 0.0
    message: str = ""
    started: bool = False
    counters: Counters = field(default_factory=Counters)


def _route(host: str) -> tuple[str, str]:
    """This machine's address towards ``host`` and the MAC of that interface."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect((host, 9))
        address = probe.getsockname()[0]
    finally:
        probe.close()
    mac = ""
    with contextlib.suppress(OSError, ValueError, KeyError, IndexError):
        found = subprocess.run(
            ["ip", "-j", "route", "get", host], capture_output=True, text=True, check=True
        )
        device = json.loads(found.stdout)[0]["dev"]
        mac = Path(f"/sys/class/net/{device}/address").read_text().strip()
    return address, mac


class MulticastFeed:
    """The chunks of a restore from the session's multicast, with fill-in by HTTP."""

    def __init__(
        self,
        client: LabClient,
        session: Session,
        chunk_ids: list[bytes],
        keys: Keys,
        local_address: str,
        state: ReceiverState,
    ) -> None:
        self.client = client
        self.session = session
        self.ids = chunk_ids
        self.number = {chunk_id: n for n, chunk_id in enumerate(chunk_ids)}
        self.keys = keys
        self.state = state
        self.counters = state.counters
        self.missing: set[int] = set(range(len(chunk_ids)))
        self.wanted: set[int] | None = None
        self._partial: dict[int, _Partial] = {}
        self._partial_bytes = 0
        self._claimed: set[int] = set()
        self._lock = threading.Lock()
        self._error: BaseException | None = None
        self._put: Callable[[bytes, bytes], None] | None = None
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="lab-fill")
        self.unicast = False
        """Everything left comes by HTTP: the server need not multicast for this PC."""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:  # root may go past net.core.rmem_max: a burst the decoding falls behind on
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 * 2**20)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 2**20)
        self.sock.bind((session.group, session.port))
        membership = socket.inet_aton(session.group) + socket.inet_aton(local_address)
        self.sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
        self.sock.settimeout(0.5)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.sock.close()

    def missing_bitmap(self) -> str | None:
        """The chunks still needed, as the report carries them (None before the restore
        said what it needs: the server then takes it as needing everything)."""
        if self.wanted is None:
            return None
        bits = bytearray((len(self.ids) + 7) // 8)
        with self._lock:
            for n in self.missing:
                bits[n >> 3] |= 1 << (n & 7)
        return base64.b64encode(zlib.compress(bytes(bits))).decode()

    # --- the restore's side -----------------------------------------------------------------

    def fill(
        self,
        wanted: Collection[bytes],
        put: Callable[[bytes, bytes], None],
        check: Callable[[], None],
    ) -> None:
        self._put = put
        others = [chunk_id for chunk_id in wanted if chunk_id not in self.number]
        with self._lock:
            self.wanted = {self.number[c] for c in wanted if c in self.number}
            self.missing = set(self.wanted)
        self.state.phase = "receiving"
        for chunk_id in others:  # not in the session's list: never multicast
            self._put(chunk_id, codec.decode_chunk(chunk_id, self._fetch(chunk_id), self.keys))
        heard = time.monotonic()
        current = -1
        pass_seen = -1
        unicast = False
        buffer = bytearray(datagram.MAX_DATAGRAM + 64)
        while True:
            check()
            if self._error is not None:
                raise self._error
            with self._lock:
                if not self.missing:
                    return
            try:
                size = self.sock.recv_into(buffer)
            except TimeoutError:
                if not self.state.started:
                    heard = time.monotonic()
                elif not unicast and time.monotonic() - heard > SILENT:
                    unicast = self.unicast = True
                    self.counters.unicast_after = time.monotonic()
                    self._pool.submit(self._guard, self._unicast)
                continue
            fragment = datagram.unpack(bytes(buffer[:size]))
            if fragment is None or fragment.session != self.session.session_bytes:
                self.counters.foreign += 1
                continue
            heard = time.monotonic()
            self.counters.datagrams += 1
            self.counters.highest = max(self.counters.highest, fragment.sequence)
            if fragment.pass_number != pass_seen:
                if pass_seen >= 0 and not unicast:
                    self._pass_ended()
                pass_seen = fragment.pass_number
            n = fragment.chunk
            if n != current:
                self._closed(current)
                current = n
            if n >= len(self.ids):
                continue
            self._take(n, fragment)

    def _take(self, n: int, fragment: datagram.Fragment) -> None:
        with self._lock:
            if n not in self.missing or n in self._claimed:
                return
            partial = self._partial.get(n)
            if partial is None:
                if self._partial_bytes + fragment.length > PARTIAL_BYTES:
                    return  # held in part enough: this one comes again in the next pass
                partial = self._partial[n] = _Partial(
                    bytearray(fragment.length), bytearray(fragment.fragments)
                )
                self._partial_bytes += fragment.length
            if len(partial.raw) != fragment.length:  # a forged or foreign one: start over
                self._partial_bytes += fragment.length - len(partial.raw)
                partial = self._partial[n] = _Partial(
                    bytearray(fragment.length), bytearray(fragment.fragments)
                )
            if partial.have[fragment.fragment]:
                return
            start, end = datagram.fragment_span(fragment.length, fragment.fragment)
            partial.raw[start:end] = fragment.payload
            partial.have[fragment.fragment] = 1
            partial.count += 1
            whole = partial.count == len(partial.have)
        if whole:
            self._deliver(n, partial.raw, "multicast")

    def _closed(self, n: int) -> None:
        """Chunk ``n``'s datagrams of this pass have gone by: fetch its missing fragments
        by HTTP when they are few, else wait for them in the next pass."""
        with self._lock:
            partial = self._partial.get(n)
            if partial is None or n not in self.missing or n in self._claimed:
                return
            lacking = len(partial.have) - partial.count
        if lacking <= max(4, len(partial.have) // 4):
            self._pool.submit(self._guard, self._repair, n, partial)

    def _pass_ended(self) -> None:
        """A pass went by: the few chunks still lacking come by HTTP now."""
        with self._lock:
            left = sorted(self.missing - self._claimed)
            wanted = len(self.wanted or ())
        if left and len(left) <= max(16, int(wanted * TAIL)):
            self.counters.tails += 1
            self._pool.submit(self._guard, self._fetch_all, left)

    def _guard(self, work: Callable[..., None], *args: object) -> None:
        try:
            work(*args)
        except BaseException as e:  # raised in the restore's thread by fill()
            self._error = e

    def _repair(self, n: int, partial: _Partial) -> None:
        gaps = partial.gaps()
        if not gaps:
            return
        try:
            body = self.client.post("/pieces", {"chunk": self.ids[n].hex(), "spans": gaps})
        except OSError:
            return  # the chunk stays missing: the next pass, or the tail's fetch, brings it
        if len(body) != sum(b - a for a, b in gaps):  # the pieces were not of this chunk
            self._refetch(n)
            return
        raw = bytearray(partial.raw)
        at = 0
        for a, b in gaps:
            raw[a:b] = body[at : at + b - a]
            at += b - a
        self.counters.repaired += 1
        self._deliver(n, raw, "repair")

    def _fetch(self, chunk_id: bytes) -> bytes:
        """A chunk by HTTP, asked up to :data:`TRIES` times (a busy server's timeout is not
        the end of the restore; a server that is gone is, after the last try)."""
        self.counters.by_http += 1
        for attempt in range(1, TRIES + 1):
            try:
                return self.client.get(f"/chunk/{chunk_id.hex()}")
            except FileNotFoundError:
                raise
            except OSError:
                if attempt == TRIES:
                    raise
                time.sleep(attempt)
        raise AssertionError("unreachable")

    def _fetch_all(self, numbers: list[int]) -> None:
        """Chunks by HTTP, :data:`FETCHERS` at once, those still missing only."""
        with ThreadPoolExecutor(FETCHERS, thread_name_prefix="lab-fetch") as fetchers:
            for done in [fetchers.submit(self._refetch, n) for n in numbers]:
                done.result()

    def _unicast(self) -> None:
        """No multicast comes: everything left, by HTTP, in order."""
        while True:
            with self._lock:
                left = sorted(self.missing - self._claimed)
            if not left:
                return
            self._fetch_all(left)

    def _deliver(self, n: int, raw: bytes | bytearray, how: str, trusted: bool = False) -> None:
        """Decode and authenticate chunk ``n``, then write it (once, whoever got it)."""
        with self._lock:
            if n not in self.missing or n in self._claimed:
                return
            self._claimed.add(n)
            dropped = self._partial.pop(n, None)
            if dropped is not None:
                self._partial_bytes -= len(dropped.raw)
        chunk_id = self.ids[n]
        try:
            plain = codec.decode_chunk(chunk_id, bytes(raw), self.keys)
        except IntegrityError:
            with self._lock:
                self._claimed.discard(n)
            if trusted:  # from the server's repository itself: it is damaged there
                raise
            self.counters.corrupt += 1  # never written; fetched whole instead
            self._pool.submit(self._guard, self._refetch, n)
            return
        assert self._put is not None
        self._put(chunk_id, plain)
        with self._lock:
            self.missing.discard(n)
            self._claimed.discard(n)
        if how == "multicast":
            self.counters.by_multicast += 1

    def _refetch(self, n: int) -> None:
        with self._lock:
            if n not in self.missing or n in self._claimed:
                return
        self._deliver(n, self._fetch(self.ids[n]), "http", trusted=True)


@dataclass
class ReceiveResult:
    ok: bool
    message: str
    after: str = ""
    restore: RestoreResult | None = None
    counters: Counters = field(default_factory=Counters)
    seconds: float = 0.0


def _first_contact(client: LabClient, patience: float = CONTACT) -> bytes:
    """The session's description; the network may still be coming up after a network
    boot, and the server may not have started yet: asked again for ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            return client.get("/session")
        except OSError as e:
            if time.monotonic() > deadline:
                raise HourglassError(
                    f"No lab session answers at {client.url} ({e.strerror or e}).",
                    "Check that `hourglass lab serve` runs there and that this PC is on "
                    "its network.",
                ) from e
            time.sleep(1)


def _prefetch(repo: Repository, snapshot_id: str) -> None:
    """The snapshot's manifest and indexes, read before this PC says it has joined (the lab
    store keeps them): the last PC to join starts the session, and on a slow port the
    multicast that follows leaves its HTTP little room. An index read then timed out twice
    and the PC was FAILED before its first chunk."""
    snapshot = repo.load_snapshot(snapshot_id)
    for image in snapshot.images:
        repo.load_index(snapshot, image.name)


def receive(
    url: str,
    target: str,
    *,
    confirm: Callable[[jobs.RestorePreview], None] = lambda _: None,
    progress: ProgressCallback = no_progress,
    receiver_id: str | None = None,
) -> ReceiveResult:
    """Join the lab session at ``url`` and restore its snapshot to ``target``; the result
    says OK only when the restore's read-back verify passed. ``confirm`` is asked before
    the target is touched (it raises to refuse)."""
    began = time.monotonic()
    client = LabClient(url)
    session = Session.from_json(_first_contact(client))
    ids = split_ids(client.get("/chunks"), session.chunks)
    repo = Repository.open_with_master(LabStore(client), session.key)
    _prefetch(repo, session.snapshot)
    address, mac = _route(client.host)
    state = ReceiverState()
    feed = MulticastFeed(client, session, ids, repo.keys, address, state)
    rid = receiver_id or uuid.uuid4().hex
    stop = threading.Event()

    def report() -> None:
        body: dict[str, object] = {
            "id": rid,
            "mac": mac,
            "phase": state.phase,
            "done": state.done,
            "total": state.total,
            "rate": state.rate,
            "message": state.message,
            "received": state.counters.datagrams,
            "highest": state.counters.highest,
        }
        missing = feed.missing_bitmap()
        if missing is not None:
            body["missing"] = missing
        if feed.unicast:
            body["unicast"] = True
        answer = client.post_json("/report", body)
        state.started = bool(answer.get("started"))

    def reporting() -> None:
        while not stop.wait(REPORT_EVERY):
            with contextlib.suppress(OSError, ValueError):
                report()

    def on_progress(event: Progress) -> None:
        if event.phase == "verify" and state.phase == "receiving":
            state.phase = "verifying"
        state.done, state.total, state.rate = event.done, event.total, event.rate
        progress(event)

    with contextlib.suppress(OSError, ValueError):  # said again every second from now on
        report()
    reporter = threading.Thread(target=reporting, name="lab-report", daemon=True)
    reporter.start()
    result: RestoreResult | None = None
    try:
        request = jobs.RestoreRequest(snapshot=session.snapshot, target=target, feed=feed)
        result = jobs.restore(repo, request, confirm=confirm, progress=on_progress)
        ok = result.verified and not result.damaged
        state.message = "verified" if ok else "not verified"
        state.phase = "OK" if ok else "FAILED"
    except HourglassError as e:
        state.phase, state.message, ok = "FAILED", e.message, False
    except OSError as e:
        state.phase, state.message, ok = "FAILED", f"the lab server {url} went ({e})", False
    except BaseException as e:
        state.phase, state.message = "FAILED", f"stopped ({type(e).__name__})"
        raise
    finally:
        stop.set()
        reporter.join(timeout=5)
        for _ in range(5):  # the last word: OK or FAILED, said even if the network blinks
            try:
                report()
                break
            except (OSError, ValueError):
                time.sleep(1)
        feed.close()
    return ReceiveResult(
        ok=ok,
        message=state.message,
        after=session.after,
        restore=result,
        counters=state.counters,
        seconds=time.monotonic() - began,
    )
