"""Network configuration against real interfaces in a network namespace made by the test."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.appliance import network
from imaging.errors import ToolMissing, UsageError


@pytest.fixture
def netns() -> Iterator[tuple[str, str]]:
    """Two namespaces joined by a veth pair: ``hga`` in the first, ``hgb`` in the second."""
    if not shutil.which("ip"):
        pytest.skip("needs iproute2")
    names = [f"hg-{secrets.token_hex(3)}", f"hg-{secrets.token_hex(3)}"]
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(
            ["ip", "-n", names[0], "link", "add", "hga", "type", "veth", "peer", "name", "hgb"],
            check=True,
        )
        subprocess.run(["ip", "-n", names[0], "link", "set", "hgb", "netns", names[1]], check=True)
        yield names[0], names[1]
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)
            shutil.rmtree(Path("/etc/netns") / name, ignore_errors=True)


SERVER = """
import socket
s = socket.socket()
s.settimeout(10)
s.bind(("10.77.0.1", 7777))
s.listen()
print("listening", flush=True)
conn, _ = s.accept()
conn.sendall(b"hello over veth")
"""
CLIENT = """
import socket
print(socket.create_connection(("10.77.0.1", 7777), timeout=5).recv(100).decode())
"""


@pytest.mark.root
@pytest.mark.integration
def test_static_addresses_work_for_real(netns: tuple[str, str]) -> None:
    one, two = netns
    network.set_static("hga", "10.77.0.1/24", netns=one)
    network.set_static("hgb", "10.77.0.2", "10.77.0.1", "10.77.0.53, 10.77.0.54", netns=two)
    [a] = network.interfaces(netns=one)  # no loopback
    [b] = network.interfaces(netns=two)
    assert (a.name, a.addresses, a.gateway) == ("hga", ("10.77.0.1/24",), "")
    assert (b.name, b.addresses, b.gateway) == ("hgb", ("10.77.0.2/24",), "10.77.0.1")
    assert b.up and b.kind == "ether" and not b.dynamic
    # Bytes cross the veth pair between the two namespaces: the addresses are real.
    server = subprocess.Popen(
        ["ip", "netns", "exec", one, sys.executable, "-c", SERVER], stdout=subprocess.PIPE
    )
    try:
        assert server.stdout is not None and server.stdout.readline() == b"listening\n"
        client = subprocess.run(
            ["ip", "netns", "exec", two, sys.executable, "-c", CLIENT],
            capture_output=True,
            timeout=20,
        )
        assert client.stdout == b"hello over veth\n", client.stderr
    finally:
        server.kill()
        server.wait()
    resolv = (Path("/etc/netns") / two / "resolv.conf").read_text()
    assert resolv == "nameserver 10.77.0.53\nnameserver 10.77.0.54\n"
    # A new address replaces the old one.
    network.set_static("hga", "10.78.0.1/16", netns=one)
    [a] = network.interfaces(netns=one)
    assert a.addresses == ("10.78.0.1/16",)


def have_dhclient() -> bool:
    return bool(shutil.which("dhclient") or shutil.which("dhclient", path="/usr/sbin:/sbin"))


@pytest.mark.root
@pytest.mark.integration
def test_unknown_interface(netns: tuple[str, str]) -> None:
    with pytest.raises(UsageError):
        network.set_static("nothere0", "10.1.1.1/24", netns=netns[0])
    with pytest.raises(UsageError):
        network.use_dhcp("nothere0", netns=netns[0])


def kill_namespace_processes(name: str) -> None:
    pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout
    for pid in pids.split():
        subprocess.run(["kill", pid], check=False)


@pytest.mark.root
@pytest.mark.integration
def test_dhcp_in_a_namespace(netns: tuple[str, str], tmp_path: Path) -> None:
    """With dhclient (as on Debian 12 and the appliance): an address from a real DHCP server
    (dnsmasq) in the other namespace. Without it: a clear ToolMissing with a hint."""
    one, two = netns
    if not have_dhclient():
        with pytest.raises(ToolMissing) as info:
            network.use_dhcp("hga", netns=one)
        assert info.value.hint
        return
    if not shutil.which("dnsmasq", path="/usr/sbin:/usr/bin:/sbin"):
        pytest.fail("dnsmasq (dnsmasq-base, .ci/debian-packages) is needed for the DHCP server")
    # dhclient-script writes /etc/resolv.conf: inside the namespace that is this file.
    (Path("/etc/netns") / one).mkdir(parents=True, exist_ok=True)
    (Path("/etc/netns") / one / "resolv.conf").write_text("")
    network.set_static("hgb", "10.79.0.1/24", netns=two)
    server = subprocess.Popen(
        [
            "ip", "netns", "exec", two, "dnsmasq", "--keep-in-foreground", "--no-resolv",
            "--no-hosts", "--port=0", "--bind-interfaces", "--interface=hgb",
            "--dhcp-range=10.79.0.50,10.79.0.60,1h", "--dhcp-option=option:dns-server,10.79.0.53",
            f"--dhcp-leasefile={tmp_path / 'leases'}", f"--pid-file={tmp_path / 'pid'}",
        ]
    )  # fmt: skip
    try:
        assert network.use_dhcp("hga", netns=one) == "dhclient"
        [a] = network.interfaces(netns=one)
        assert len(a.addresses) == 1 and a.addresses[0].startswith("10.79.0."), a.addresses
        assert 50 <= int(a.addresses[0].split("/")[0].rsplit(".", 1)[1]) <= 60
        assert "10.79.0.53" in (Path("/etc/netns") / one / "resolv.conf").read_text()
    finally:
        kill_namespace_processes(one)  # dhclient stays to renew the lease
        server.terminate()
        server.wait(10)


def test_typed_addresses_are_checked() -> None:
    static = network.parse_static("192.168.1.20", "192.168.1.1", "1.1.1.1,9.9.9.9")
    assert str(static.address) == "192.168.1.20/24"
    assert [str(s) for s in static.dns] == ["1.1.1.1", "9.9.9.9"]
    for address, gateway, dns in (
        ("", "", ""),
        ("192.168.1.300/24", "", ""),
        ("192.168.1.0/24", "", ""),
        ("192.168.1.20/24", "10.0.0.1", ""),
        ("192.168.1.20/24", "gateway", ""),
        ("192.168.1.20/24", "", "dns.example"),
    ):
        with pytest.raises(UsageError):
            network.parse_static(address, gateway, dns)


def test_networkd_file() -> None:
    static = network.parse_static("10.0.0.5/8", "10.0.0.1", "10.0.0.2")
    assert network.networkd_file("enp1s0", static) == (
        "# Written by the Hourglass app.\n[Match]\nName=enp1s0\n\n[Network]\n"
        "Address=10.0.0.5/8\nGateway=10.0.0.1\nDNS=10.0.0.2\n"
    )
    assert network.networkd_file("eth0", None).endswith("[Network]\nDHCP=yes\n")
