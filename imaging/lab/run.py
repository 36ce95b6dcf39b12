"""One lab session as `hourglass lab serve` runs it, headless or under the dashboard: the
server, the network boot, the rule that starts the multicast, the rows and the summary."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from imaging.lab.pxe import PxeBoot
from imaging.lab.server import FINAL, ClientState, LabServer
from imaging.units import human_size

RESULT = "HOURGLASS-RESULT:"


@dataclass(frozen=True)
class Row:
    """A PC as the session shows it: by MAC as soon as it network-boots, then its reports."""

    mac: str
    name: str
    address: str
    phase: str  # booting, joined, receiving, verifying, OK, FAILED
    done: int
    total: int
    rate: float
    message: str
    seconds: float  # from the start of the multicast to its end (OK or FAILED)

    @property
    def fraction(self) -> float:
        return min(1.0, self.done / self.total) if self.total else 0.0


class LabRun:
    """Start rule: at ``clients`` PCs, or ``start_after`` seconds after serving, whichever
    comes first; with neither, when the first PC joins (later ones catch up); or
    :meth:`start_now` (the dashboard's key). Done, once started, when every PC that joined
    is OK or FAILED."""

    def __init__(
        self,
        server: LabServer,
        boot: PxeBoot | None,
        *,
        clients: int | None = None,
        start_after: float | None = None,
        names: dict[str, str] | None = None,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.server = server
        self.boot = boot
        self.clients = clients
        self.start_after = start_after
        self.names = names or {}
        self.say = say
        self.opened = 0.0
        self.opened_at = datetime.now()
        self.started_by = ""
        server.on_change = self._changed
        if boot is not None:
            boot.on_boot = lambda mac: self.say(f"PC {self.name_of(mac)} network-boots")

    def name_of(self, mac: str) -> str:
        return f"{mac} ({self.names[mac]})" if mac in self.names else (mac or "a PC")

    def _changed(self, client: ClientState) -> None:
        what = f"PC {self.name_of(client.mac)} at {client.address}"
        if client.phase in FINAL:
            self.say(f"{what}: {client.phase} {client.message}")
        else:
            self.say(f"{what}: {client.phase}")

    def open(self) -> None:
        self.server.start()
        try:
            if self.boot is not None:
                self.boot.start()
        except BaseException:
            self.server.stop()
            raise
        self.opened = time.monotonic()

    def rule(self) -> str:
        rules = []
        if self.clients is not None:
            rules.append(f"at {self.clients} PCs")
        if self.start_after is not None:
            rules.append(f"{self.start_after:g} s after serving")
        if not rules:
            return "Starts when the first PC joins; later ones catch up."
        return "Starts " + " or ".join(rules) + ", whichever comes first."

    def start_now(self, why: str = "by hand") -> None:
        if not self.server.started:
            joined = len(self.server.status())
            self.started_by = why
            self.server.begin()
            self.say(f"Started {why} with {joined} PC{'' if joined == 1 else 's'}.")

    def waited(self) -> float:
        """Seconds since the session was opened."""
        return time.monotonic() - self.opened

    def poll(self) -> bool:
        """Check the network boot, start when the rule says; True when the session is done."""
        if self.boot is not None:
            self.boot.check()
        joined = len(self.server.status())
        if not self.server.started:
            if self.clients is not None and joined >= self.clients:
                self.start_now(f"at {joined} PCs")
            elif (
                self.start_after is not None and time.monotonic() - self.opened >= self.start_after
            ):
                self.start_now(f"after {self.start_after:g} s")
            elif self.clients is None and self.start_after is None and joined:
                self.start_now("as the first PC joined")
        return self.server.started and self.server.finished()

    def rows(self) -> list[Row]:
        clients = self.server.status()
        begun = self.server.started_at
        rows = [
            Row(
                mac=c.mac,
                name=self.names.get(c.mac, ""),
                address=c.address,
                phase=c.phase,
                done=c.done,
                total=c.total,
                rate=c.rate,
                message=c.message,
                seconds=((c.ended or time.monotonic()) - begun) if begun else 0.0,
            )
            for c in clients
        ]
        reporting = {c.mac for c in clients}
        for mac in self.boot.booted if self.boot is not None else []:
            if mac not in reporting:
                rows.append(Row(mac, self.names.get(mac, ""), "", "booting", 0, 0, 0.0, "", 0.0))
        return rows

    @property
    def ok(self) -> bool:
        rows = [r for r in self.rows() if r.phase != "booting"]
        return bool(rows) and all(r.phase == "OK" for r in rows)

    def result_line(self) -> str:
        rows = [r for r in self.rows() if r.phase != "booting"]
        good = sum(r.phase == "OK" for r in rows)
        passes = self.server.passes
        return (
            f"{RESULT} {'OK' if self.ok else 'FAILED'} {good} of {len(rows)} PCs restored and "
            f"verified from snapshot {self.server.snapshot.id[:12]}; "
            f"{human_size(self.server.sent_bytes)} multicast in {passes} "
            f"pass{'' if passes == 1 else 'es'}"
        )

    def summary(self) -> str:
        """The session as text: what the dashboard saves and the headless run prints."""
        snapshot = self.server.snapshot
        lines = [
            f"Hourglass lab session {self.opened_at:%Y-%m-%d %H:%M:%S}: snapshot "
            f"{snapshot.id[:12]} ({snapshot.time:%Y-%m-%d %H:%M:%S}, {human_size(snapshot.size)})"
            f" from {self.server.url()}",
        ]
        for r in self.rows():
            who = f"{r.mac} {r.name}".strip()
            lines.append(f"  {who:<30} {r.phase:<9} {r.seconds:6.1f} s  {r.message}")
        lines.append(self.result_line())
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        try:
            if self.boot is not None:
                self.boot.stop()
        finally:
            self.server.stop()
