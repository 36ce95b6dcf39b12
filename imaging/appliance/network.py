"""Network interfaces: what they are, and an address by DHCP or typed by hand.

The appliance runs systemd-networkd (DHCP on every wired interface by default). A choice
made in the app becomes a ``.network`` file in ``/run/systemd/network`` (ahead of the
image's own, and gone at the next boot), applied with ``networkctl``. Where networkd does
not run (a developer's machine, a network namespace in the tests) a static address is set
with ``ip`` and DHCP asks ``dhclient``.

Every function takes ``netns``: the name of a network namespace to work in (``ip -n``),
which is how the tests get real interfaces to configure without touching the machine's.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import HourglassError, ToolMissing, UsageError
from imaging.process import run

NETWORKD_DIR = Path("/run/systemd/network")
RESOLV_CONF = Path("/etc/resolv.conf")


@dataclass(frozen=True)
class Interface:
    name: str
    mac: str
    kind: str  # "ether", "wlan", or ip's link type
    up: bool  # administratively up
    carrier: bool  # a cable (or an association) is there
    addresses: tuple[str, ...]  # "192.168.1.20/24", global IPv6 too; no link-local
    dynamic: bool  # an address came from DHCP (or router advertisements)
    gateway: str = ""  # the default route's next hop through this interface


def _ip(netns: str | None) -> list[str]:
    return ["ip", "-n", netns] if netns else ["ip"]


def _json(argv: list[str]) -> list[dict[str, object]]:
    out = run(argv).stdout
    try:
        value = json.loads(out or b"[]")
    except ValueError as e:
        raise HourglassError(f"{' '.join(argv)} printed something that is not JSON.") from e
    return value if isinstance(value, list) else []


def interfaces(*, netns: str | None = None) -> list[Interface]:
    """Every interface but loopback, in the kernel's order."""
    links = _json([*_ip(netns), "-j", "address", "show"])
    routes = _json([*_ip(netns), "-j", "route", "show", "default"])
    gateways: dict[str, str] = {}
    for route in routes:
        dev, via = route.get("dev"), route.get("gateway")
        if isinstance(dev, str) and isinstance(via, str):
            gateways.setdefault(dev, via)
    result = []
    for link in links:
        name = str(link.get("ifname", ""))
        link_type = str(link.get("link_type", ""))
        if link_type == "loopback" or not name:
            continue
        flags = link.get("flags") or []
        assert isinstance(flags, list)
        addresses = []
        dynamic = False
        for info in link.get("addr_info") or []:  # type: ignore[attr-defined]
            if info.get("scope") == "link":
                continue
            addresses.append(f"{info.get('local')}/{info.get('prefixlen')}")
            dynamic = dynamic or bool(info.get("dynamic"))
        wireless = os.path.isdir(f"/sys/class/net/{name}/wireless") and not netns
        result.append(
            Interface(
                name=name,
                mac=str(link.get("address", "")),
                kind="wlan" if wireless else link_type,
                up="UP" in flags,
                carrier="LOWER_UP" in flags,
                addresses=tuple(addresses),
                dynamic=dynamic,
                gateway=gateways.get(name, ""),
            )
        )
    return result


@dataclass(frozen=True)
class StaticAddress:
    """A checked static configuration."""

    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    dns: tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...]


def parse_static(address: str, gateway: str = "", dns: str = "") -> StaticAddress:
    """Read what a person typed: ``192.168.1.20/24`` (``/24`` assumed without a prefix),
    a gateway in that network, DNS servers separated by spaces or commas."""
    text = address.strip()
    if not text:
        raise UsageError("Type an address, for example 192.168.1.20/24.")
    if "/" not in text:
        text += "/24" if ":" not in text else "/64"
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError:
        raise UsageError(
            f"{address!r} is not an IP address.", "Write it as 192.168.1.20/24."
        ) from None
    if iface.ip == iface.network.network_address and iface.network.prefixlen < 31:
        raise UsageError(f"{iface} is the address of the network itself, not of a computer.")
    gw = None
    if gateway.strip():
        try:
            gw = ipaddress.ip_address(gateway.strip())
        except ValueError:
            raise UsageError(f"{gateway!r} is not an IP address.") from None
        if gw not in iface.network:
            raise UsageError(
                f"The gateway {gw} is not in the network {iface.network}.",
                "Check the address, its /prefix and the gateway.",
            )
    servers = []
    for word in dns.replace(",", " ").split():
        try:
            servers.append(ipaddress.ip_address(word))
        except ValueError:
            raise UsageError(f"{word!r} is not the IP address of a DNS server.") from None
    return StaticAddress(iface, gw, tuple(servers))


def networkd_file(name: str, static: StaticAddress | None) -> str:
    """The ``.network`` file for ``name``: DHCP when ``static`` is None."""
    lines = ["# Written by the Hourglass app.", "[Match]", f"Name={name}", "", "[Network]"]
    if static is None:
        lines.append("DHCP=yes")
    else:
        lines.append(f"Address={static.address}")
        if static.gateway is not None:
            lines.append(f"Gateway={static.gateway}")
        lines.extend(f"DNS={server}" for server in static.dns)
    return "\n".join(lines) + "\n"


def networkd_running() -> bool:
    if not shutil.which("networkctl"):
        return False
    return run(["networkctl", "--no-pager", "list"], check=False).returncode == 0


def _check_name(name: str, netns: str | None) -> None:
    if name not in {i.name for i in interfaces(netns=netns)}:
        raise UsageError(f"There is no network interface {name!r}.")


def _networkd_apply(name: str, static: StaticAddress | None) -> None:
    NETWORKD_DIR.mkdir(parents=True, exist_ok=True)
    path = NETWORKD_DIR / f"10-hourglass-{name}.network"
    path.write_text(networkd_file(name, static))
    run(["networkctl", "reload"])
    run(["networkctl", "reconfigure", name])


def use_dhcp(name: str, *, netns: str | None = None) -> str:
    """Ask for an address by DHCP on ``name``; returns which program does it."""
    _check_name(name, netns)
    if netns is None and networkd_running():
        _networkd_apply(name, None)
        return "systemd-networkd"
    if not shutil.which("dhclient") and not shutil.which("dhclient", path="/usr/sbin:/sbin"):
        raise ToolMissing(
            "No DHCP client: systemd-networkd is not running and dhclient is not installed.",
            "Set a static address instead, or install isc-dhcp-client.",
        )
    prefix = ["ip", "netns", "exec", netns] if netns else []
    run([*_ip(netns), "link", "set", "dev", name, "up"])
    run([*prefix, "dhclient", "-1", "-v", name], timeout=60)
    return "dhclient"


def set_static(
    name: str,
    address: str,
    gateway: str = "",
    dns: str = "",
    *,
    netns: str | None = None,
) -> StaticAddress:
    """Give ``name`` a static address (replacing the ones it has), a default route through
    ``gateway`` and the DNS servers ``dns``."""
    static = parse_static(address, gateway, dns)
    _check_name(name, netns)
    if netns is None and networkd_running():
        _networkd_apply(name, static)
        return static
    ip = _ip(netns)
    run([*ip, "link", "set", "dev", name, "up"])
    run([*ip, "address", "flush", "dev", name, "scope", "global"])
    run([*ip, "address", "add", str(static.address), "dev", name])
    if static.gateway is not None:
        run([*ip, "route", "replace", "default", "via", str(static.gateway), "dev", name])
    if static.dns:
        resolv = Path("/etc/netns") / netns / "resolv.conf" if netns else RESOLV_CONF
        resolv.parent.mkdir(parents=True, exist_ok=True)
        resolv.write_text("".join(f"nameserver {server}\n" for server in static.dns))
    return static
