"""A room of PCs as network namespaces (../shared/lab-notes.md): a switch namespace with a
bridge, and each host a namespace on a veth port of it. Rates with ``tbf`` (this kernel
has no netem), loss and dropped multicast with nftables in the switch's bridge table."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True)


class Room:
    def __init__(self, prefix: str, subnet: str) -> None:
        self.prefix = prefix
        self.subnet = subnet  # "10.77.6": hosts are .1, .2, ...
        self.switch = f"{prefix}-sw"
        self.hosts: dict[str, str] = {}  # namespace -> address
        self.rules: list[str] = []

    def __enter__(self) -> Room:
        # A run that was killed (CI's timeout) never reached __exit__: its namespaces of
        # this prefix, and what runs in them, are still there.
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
        stale = [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]
        self._remove([name for name in stale if name.startswith(self.prefix + "-")])
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        # no IGMP snooping on the bridge: multicast floods every port, as on a plain switch
        ip("-n", self.switch, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0")
        ip("-n", self.switch, "link", "set", "br0", "up")
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove([*self.hosts, self.switch])

    @staticmethod
    def _remove(names: list[str]) -> None:
        for name in names:
            pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for pid in pids.stdout.split():
                subprocess.run(["kill", "-9", pid], check=False)
            subprocess.run(["ip", "netns", "del", name], check=False)

    def port(self, host: str) -> str:
        return f"v-{host.removeprefix(self.prefix + '-')}"

    def add(self, name: str, rate_mbit: float | None = None) -> str:
        """A host on a port of the switch, capped both ways at ``rate_mbit``; its address."""
        host = f"{self.prefix}-{name}"
        address = f"{self.subnet}.{len(self.hosts) + 1}"
        ip("netns", "add", host)
        port = self.port(host)
        ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", "eth0",
           "netns", host)  # fmt: skip
        ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
        ip("-n", host, "addr", "add", f"{address}/24", "brd", "+", "dev", "eth0")
        ip("-n", host, "link", "set", "eth0", "up")
        ip("-n", host, "link", "set", "lo", "up")
        ip("-n", host, "route", "add", "224.0.0.0/4", "dev", "eth0")
        self.hosts[host] = address
        if rate_mbit is not None:
            self.rate(name, rate_mbit)
        return address

    def tap(self, name: str = "tap0") -> str:
        """A tap device on the bridge, for a QEMU PC (QEMU runs in the switch's namespace:
        ``run("sw", ...)``)."""
        ip("-n", self.switch, "tuntap", "add", "dev", name, "mode", "tap")
        ip("-n", self.switch, "link", "set", name, "master", "br0", "up")
        return name

    def rate(self, name: str, mbit: float) -> None:
        """Cap the port: what the host sends and what it is sent."""
        host = f"{self.prefix}-{name}"
        for ns, dev in ((host, "eth0"), (self.switch, self.port(host))):
            subprocess.run(
                ["ip", "netns", "exec", ns, "tc", "qdisc", "replace", "dev", dev, "root",
                 "tbf", "rate", f"{mbit}mbit", "burst", "64kb", "latency", "40ms"],
                check=True,
            )  # fmt: skip

    def _nft(self, rule: str) -> None:
        if not self.rules:
            script = (
                "table bridge lab {\n"
                "  chain forward { type filter hook forward priority 0; policy accept; }\n"
                "}\n"
            )
            subprocess.run(
                ["ip", "netns", "exec", self.switch, "nft", "-f", "-"],
                input=script,
                text=True,
                check=True,
            )
        subprocess.run(
            ["ip", "netns", "exec", self.switch, "nft", "add", "rule", "bridge", "lab", "forward",
             *rule.split()],
            check=True,
        )  # fmt: skip
        self.rules.append(rule)

    def loss(self, name: str, percent: int) -> None:
        """Drop ``percent`` % of what the host is sent (every kind of packet)."""
        port = self.port(f"{self.prefix}-{name}")
        self._nft(f'oifname "{port}" numgen random mod 100 < {percent} drop')

    def no_multicast(self, name: str) -> None:
        """The host gets no multicast (a switch snooping IGMP with no querier)."""
        port = self.port(f"{self.prefix}-{name}")
        self._nft(f'oifname "{port}" ip daddr 224.0.0.0/4 drop')

    def run(self, name: str, *argv: str, **kw: object) -> subprocess.Popen[str]:
        """``argv`` in the host's namespace (``python`` is this interpreter)."""
        host = f"{self.prefix}-{name}"
        command = [sys.executable if a == "python" else a for a in argv]
        return subprocess.Popen(
            ["ip", "netns", "exec", host, *command],
            cwd=REPO_ROOT,
            text=True,
            **kw,  # type: ignore[arg-type]
        )


@contextlib.contextmanager
def room(prefix: str, subnet: str) -> Iterator[Room]:
    with Room(prefix, subnet) as r:
        yield r
