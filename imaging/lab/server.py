"""The lab server: one snapshot to a room of PCs at once (docs/LAB.md).

HTTP (one port) gives a receiver the session, the chunk list, the repository's small
objects (config, key slots, the manifest, the indexes) and any chunk or piece of a chunk it
missed; receivers report there about every second. A sender thread multicasts the stored
chunks (as the repository holds them: ciphertext) in passes, each pass only the chunks some
live receiver still lacks, at a rate that follows the median receiver's loss (not the
slowest one's). A receiver silent for :data:`SILENT` seconds is FAILED and stops counting.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import socket
import statistics
import threading
import time
import zlib
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from imaging.errors import HourglassError, UsageError
from imaging.lab import datagram
from imaging.lab.session import Session
from imaging.repository import codec
from imaging.repository.storage import Kind, Name
from imaging.repository.store import Repository, Snapshot

HTTP_PORT = 8470
GROUP = "239.255.72.1"
PORT = 9472
SILENT = 15.0
"""Seconds without a report after which a receiver is FAILED."""
START_RATE = 12.5e6  # bytes/s (100 Mbit/s); the room's loss moves it from there
MIN_RATE = 0.5e6
MAX_RATE = 125e6
SERVED = (Kind.CONFIG, Kind.KEYS, Kind.SNAPSHOTS, Kind.INDEXES)
FINAL = ("OK", "FAILED")


@dataclass
class ClientState:
    """One PC as the server knows it, from its reports."""

    id: str
    mac: str
    address: str
    phase: str = "joined"  # joined, receiving, verifying, OK, FAILED
    done: int = 0
    total: int = 0
    rate: float = 0.0
    message: str = ""
    last_seen: float = 0.0
    joined: float = 0.0
    ended: float = 0.0
    loss: float | None = None  # of the multicast, over its last report's interval
    unicast: bool = False  # it fetches everything left by HTTP: not multicast for
    missing: bytes | None = field(default=None, repr=False)  # bitmap of chunk numbers
    _counters: tuple[int, int] | None = field(default=None, repr=False)


def _bitmap(data: str, chunks: int) -> bytes | None:
    try:
        bits = zlib.decompress(base64.b64decode(data))
    except (ValueError, zlib.error):
        return None
    return bits if len(bits) == (chunks + 7) // 8 else None


class LabServer:
    """Serve ``snapshot`` of ``repo`` to the room on ``address`` (this machine's address on
    the lab network). :meth:`start` lets PCs join; :meth:`begin` starts the multicast."""

    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot,
        *,
        address: str,
        http_port: int = HTTP_PORT,
        group: str = GROUP,
        port: int = PORT,
        after: str = "",
        max_rate: float = MAX_RATE,
        on_change: Callable[[ClientState], None] | None = None,
    ) -> None:
        self.repo = repo
        self.snapshot = snapshot
        self.address = address
        self.http_port = http_port
        self.group = group
        self.port = port
        self.after = after
        self.max_rate = max_rate
        self.rate = min(START_RATE, max_rate)
        self.on_change = on_change
        self.session_id = secrets.token_hex(8)
        self.chunks: list[bytes] = []
        self.number: dict[bytes, int] = {}
        self.sent_bytes = 0
        self.passes = 0
        self._clients: dict[str, ClientState] = {}
        self._lock = threading.Lock()
        self._begun = threading.Event()
        self._stop = threading.Event()
        self._stack = ExitStack()
        self._http: ThreadingHTTPServer | None = None
        self._threads: list[threading.Thread] = []
        self.started_at = 0.0

    # --- set-up -----------------------------------------------------------------------------

    def url(self) -> str:
        return f"http://{self.address}:{self.http_port}"

    def start(self) -> None:
        """Take a reader lease, list the chunks, open HTTP: PCs can join from now on."""
        self._stack.enter_context(self.repo.reader())
        seen: set[bytes] = set(codec.RESERVED_IDS)
        for image in self.snapshot.images:
            for chunk_id in self.repo.load_index(self.snapshot, image.name):
                if chunk_id not in seen:
                    seen.add(chunk_id)
                    self.number[chunk_id] = len(self.chunks)
                    self.chunks.append(chunk_id)
        self.session = Session(
            id=self.session_id,
            snapshot=self.snapshot.id,
            group=self.group,
            port=self.port,
            chunks=len(self.chunks),
            key=self.repo.keys.master,
            after=self.after,
        )
        self._chunk_list = b"".join(self.chunks)
        try:
            self._http = ThreadingHTTPServer((self.address, self.http_port), _handler(self))
        except OSError as e:
            self._stack.close()
            raise UsageError(
                f"Cannot serve the lab on {self.address}:{self.http_port}: {e.strerror}.",
                "Another lab session or program may use the port; stop it or choose another.",
            ) from e
        self._http.daemon_threads = True
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        self._sock.setsockopt(
            socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(self.address)
        )
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 2**20)
        self._spawn(self._http.serve_forever, "lab-http")
        self._spawn(self._watch, "lab-watch")

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def begin(self) -> None:
        """Start the multicast (again: nothing)."""
        if not self._begun.is_set():
            self.started_at = time.monotonic()
            self._begun.set()
            self._spawn(self._send, "lab-send")

    @property
    def started(self) -> bool:
        return self._begun.is_set()

    def stop(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=10)
        self._sock.close()
        self._stack.close()

    # --- the room ---------------------------------------------------------------------------

    def status(self) -> list[ClientState]:
        with self._lock:
            return [replace(c) for c in sorted(self._clients.values(), key=lambda c: c.joined)]

    def summary(self) -> dict[str, Any]:
        """The session as ``GET /status`` gives it (dashboards, tests)."""
        clients = [
            {
                "id": c.id,
                "mac": c.mac,
                "address": c.address,
                "phase": c.phase,
                "done": c.done,
                "total": c.total,
                "rate": c.rate,
                "message": c.message,
                "loss": c.loss,
            }
            for c in self.status()
        ]
        return {
            "started": self.started,
            "rate": self.rate,
            "sent_bytes": self.sent_bytes,
            "passes": self.passes,
            "clients": clients,
        }

    def finished(self) -> bool:
        """Every PC that joined is OK or FAILED (and one joined)."""
        with self._lock:
            return bool(self._clients) and all(c.phase in FINAL for c in self._clients.values())

    def _changed(self, client: ClientState) -> None:
        if self.on_change is not None:
            self.on_change(replace(client))

    def report(self, address: str, body: dict[str, Any]) -> dict[str, Any]:
        """A receiver's report (``POST /report``); the answer tells it whether the
        multicast has begun."""
        now = time.monotonic()
        rid = str(body.get("id", ""))[:64]
        if not rid:
            raise ValueError("a report names its receiver")
        with self._lock:
            client = self._clients.get(rid)
            new = client is None
            if client is None:
                client = self._clients[rid] = ClientState(
                    rid, str(body.get("mac", ""))[:17], address, joined=now
                )
            before = client.phase
            client.last_seen = now
            if client.phase not in FINAL:
                phase = str(body.get("phase", "joined"))
                client.phase = (
                    phase if phase in ("joined", "receiving", "verifying", *FINAL) else "joined"
                )
                client.done = int(body.get("done", 0))
                client.total = int(body.get("total", 0))
                client.rate = float(body.get("rate", 0.0))
                client.message = str(body.get("message", ""))[:500]
                client.unicast = bool(body.get("unicast", False))
                if "missing" in body:
                    client.missing = _bitmap(str(body["missing"]), len(self.chunks))
                received, highest = int(body.get("received", 0)), int(body.get("highest", 0))
                if client._counters is not None:
                    got, span = received - client._counters[0], highest - client._counters[1]
                    client.loss = max(0.0, 1 - got / span) if span >= 64 else client.loss
                client._counters = (received, highest)
                if client.phase in FINAL:
                    client.ended = now
            changed = new or client.phase != before
        if changed:
            self._changed(client)
        return {"started": self.started}

    def _watch(self) -> None:
        """Once a second: FAIL the silent, and set the rate from the room's loss."""
        while not self._stop.wait(1.0):
            now = time.monotonic()
            failed = []
            with self._lock:
                for client in self._clients.values():
                    if client.phase not in FINAL and now - client.last_seen > SILENT:
                        client.phase = "FAILED"
                        client.message = f"no report for {SILENT:.0f} s"
                        client.ended = now
                        failed.append(client)
                losses = [
                    c.loss
                    for c in self._clients.values()
                    if c.phase == "receiving" and c.loss is not None and now - c.last_seen < 3
                ]
            for client in failed:
                self._changed(client)
            if losses and self.started:
                loss = statistics.median(losses)
                if loss > 0.05:
                    self.rate = max(MIN_RATE, self.rate * 0.7)
                elif loss < 0.01:
                    self.rate = min(self.max_rate, self.rate * 1.15)

    def _needed(self) -> bytearray | None:
        """The chunks some live receiver lacks (a bitmap), None when none lacks any."""
        needed = bytearray((len(self.chunks) + 7) // 8)
        anyone = False
        with self._lock:
            for client in self._clients.values():
                if client.phase in FINAL or client.phase == "verifying" or client.unicast:
                    continue
                anyone = True
                if client.missing is None:  # not said yet: everything
                    return bytearray(b"\xff" * len(needed))
                needed = bytearray(a | b for a, b in zip(needed, client.missing, strict=True))
        return needed if anyone and any(needed) else None

    # --- the multicast ----------------------------------------------------------------------

    def _send(self) -> None:
        sequence = 0
        session = self.session.session_bytes
        target = (self.group, self.port)
        budget, clock = 0.0, time.monotonic()
        while not self._stop.is_set():
            needed = self._needed()
            if needed is None:
                self._stop.wait(0.2)
                continue
            refreshed = time.monotonic()
            for n, chunk_id in enumerate(self.chunks):
                if self._stop.is_set():
                    return
                if time.monotonic() - refreshed > 0.5:
                    needed = self._needed()
                    refreshed = time.monotonic()
                    if needed is None:
                        break
                if not needed[n >> 3] & (1 << (n & 7)):
                    continue
                try:
                    raw = self.repo.read_chunk_file(chunk_id)
                except HourglassError:
                    continue  # receivers fetch it by HTTP and say what is wrong
                fragments = datagram.fragment_count(len(raw))
                view = memoryview(raw)
                for f in range(fragments):
                    start, end = datagram.fragment_span(len(raw), f)
                    packet = datagram.pack(
                        session, sequence, self.passes, n, f, fragments, len(raw), view[start:end]
                    )
                    now = time.monotonic()
                    budget = min(budget + (now - clock) * self.rate, 64 * 1024)
                    clock = now
                    if budget < len(packet):
                        time.sleep((len(packet) - budget) / self.rate)
                        now = time.monotonic()
                        budget += (now - clock) * self.rate
                        clock = now
                    budget -= len(packet)
                    # a full queue: a lost datagram, which the receivers repair
                    with contextlib.suppress(OSError):
                        self._sock.sendto(packet, target)
                    sequence += 1
                    self.sent_bytes += len(packet)
            self.passes += 1

    # --- HTTP -------------------------------------------------------------------------------

    def object(self, path: str) -> bytes:
        """A repository object by its ``/repo/KIND/KEY`` path (KeyError if not served)."""
        kind_name, _, key = path.partition("/")
        kind = Kind(kind_name)
        if kind not in SERVED:
            raise KeyError(path)
        key = unquote(key)
        if kind is Kind.KEYS and not key:
            return json.dumps([o.name.key for o in self.repo.store.list(Kind.KEYS)]).encode()
        if kind is Kind.SNAPSHOTS and not key:
            return json.dumps([self.snapshot.id]).encode()
        if (kind is Kind.SNAPSHOTS and key != self.snapshot.id) or (
            kind is Kind.INDEXES and not key.startswith(f"{self.snapshot.id}/")
        ):
            raise KeyError(path)  # only this session's snapshot
        return self.repo.store.get(Name(kind, key))

    def chunk(self, hex_id: str) -> bytes:
        chunk_id = bytes.fromhex(hex_id)
        if chunk_id not in self.number:
            raise KeyError(hex_id)  # only this snapshot's chunks
        return self.repo.read_chunk_file(chunk_id)


def _handler(server: LabServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass  # a line per request would drown the session's own lines

        def _send(self, status: int, body: bytes, kind: str = "application/octet-stream") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path
            try:
                if path == "/session":
                    self._send(200, server.session.to_json(), "application/json")
                elif path == "/status":
                    self._send(200, json.dumps(server.summary()).encode(), "application/json")
                elif path == "/chunks":
                    self._send(200, server._chunk_list)
                elif path.startswith("/chunk/"):
                    self._send(200, server.chunk(path.removeprefix("/chunk/")))
                elif path.startswith("/repo/"):
                    self._send(200, server.object(path.removeprefix("/repo/")))
                else:
                    self._send(404, b"")
            except (KeyError, ValueError, FileNotFoundError):
                self._send(404, b"")
            except (HourglassError, OSError) as e:
                self._send(500, str(e).encode())

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            try:
                body = json.loads(self.rfile.read(length)) if length else {}
                if self.path == "/report":
                    answer = server.report(self.client_address[0], body)
                    self._send(200, json.dumps(answer).encode(), "application/json")
                elif self.path == "/pieces":
                    raw = server.chunk(str(body["chunk"]))
                    spans = [(int(a), int(b)) for a, b in body["spans"]]
                    self._send(200, b"".join(raw[a:b] for a, b in spans))
                else:
                    self._send(404, b"")
            except (KeyError, ValueError, TypeError):
                self._send(400, b"")
            except (HourglassError, OSError) as e:
                self._send(500, str(e).encode())

    return Handler
