"""`hourglass lab serve` and `lab receive` in a room of network namespaces: the real CLI
processes, a real repository with a snapshot of a real GPT disk (ext4 with files), ports
capped with tbf, loss and dropped multicast with nftables (tests/imaging/lab/room.py).

What is asserted is what must hold whatever the timing: every PC ends OK with its disk
verified (the restore's own read-back) and holding the source's files, a lossy PC, a late
joiner, a PC that gets no multicast and a PC on a slow port all end OK, a killed PC is
FAILED at the server while the others end OK, and forged datagrams are never written. The
times are printed (pytest -s) for the closing notes and `make bench`; none is asserted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from imaging.lab import datagram
from tests.conftest import PASSPHRASE
from tests.imaging.disks import helpers
from tests.imaging.disks.conftest import weak_repository
from tests.imaging.lab.room import Room
from tests.support import MiB, run_cli

pytestmark = [
    pytest.mark.root,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.xdist_group("lab-room"),  # one room of namespaces at a time
]

SERVER = "10.77.6.1"
URL = f"http://{SERVER}:8470"
PORT_MBIT = 100


@dataclass
class Source:
    repo: Path
    passphrase_file: Path
    files: dict[str, str]
    disk_mib: int


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    """A 128 MiB GPT disk, one ext4 partition with 56 MiB of files (a third of them random,
    so the multicast carries about 40 MB), backed up."""
    for tool in ("sgdisk", "partx", "partclone.extfs", "nft", "tc"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    tmp = tmp_path_factory.mktemp("lab-source")
    layout = [helpers.GptPart(1, "ext4", 124, "8300", "labroot", "root")]
    image = tmp / "pc.img"
    helpers.make_gpt_disk(image, layout, 128)
    with helpers.attached(image) as device:
        dev = helpers.node(device, 1)
        helpers.make_fs(dev, "ext4", "labroot")
        files = helpers.put_files(dev, "ext4", tmp, 36 * MiB, seed=19)
        with helpers.mounted_fs(dev, "ext4", tmp / "random") as root:
            (root / "random.bin").write_bytes(os.urandom(20 * MiB))
        files = helpers.read_files(dev, "ext4", tmp)
        repo = weak_repository(tmp / "repo")
        passphrase_file = tmp / "passphrase"
        passphrase_file.write_text(PASSPHRASE)
        assert run_cli("backup", "--repo", str(repo.path), "--passphrase-file",
                       str(passphrase_file), device) == 0  # fmt: skip
    return Source(repo.path, passphrase_file, files, 128)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))
        self.popen.wait()
        self.ended = time.monotonic()

    def wait(self, timeout: float) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(10)
        return code

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def result(self) -> str:
        found = [line for line in self.lines if line.startswith("HOURGLASS-RESULT:")]
        assert len(found) == 1, f"{self.name} printed {len(found)} result lines:\n{self.text}"
        return found[0]

    @property
    def seconds(self) -> float:
        assert self.ended is not None
        return self.ended - self.started


@pytest.fixture
def lab() -> Iterator[Room]:
    with Room("hgl", "10.77.6") as r:
        yield r


def serve(lab: Room, source: Source, *extra: str) -> Process:
    popen = lab.run(
        "srv", "python", "-m", "imaging.cli.main", "lab", "serve", "--repo", str(source.repo),
        "--passphrase-file", str(source.passphrase_file), "--snapshot", "latest", "--no-pxe",
        "--address", SERVER, *extra,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Process("server", popen)
    deadline = time.monotonic() + 60
    while not any("Serving snapshot" in line for line in server.lines):
        assert popen.poll() is None, f"the server ended:\n{server.text}"
        assert time.monotonic() < deadline, f"the server did not come up:\n{server.text}"
        time.sleep(0.1)
    return server


def receive(lab: Room, name: str, target: Path) -> Process:
    popen = lab.run(
        name, "python", "-m", "imaging.cli.main", "lab", "receive", "--server", URL, "--yes",
        "--progress", "none", str(target),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    return Process(name, popen)


def status(lab: Room, name: str) -> dict[str, object]:
    """The server's /status, asked from host ``name`` of the room."""
    out = subprocess.run(
        ["ip", "netns", "exec", f"hgl-{name}", "python3", "-c",
         f"import urllib.request; print(urllib.request.urlopen('{URL}/status').read().decode())"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    value: dict[str, object] = json.loads(out)
    return value


def wait_for_progress(lab: Room, name: str, fraction: float, timeout: float = 120) -> None:
    """Until the first PC that reports has restored ``fraction`` of its disk."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        clients = status(lab, name)["clients"]
        assert isinstance(clients, list)
        for c in clients:
            if c["phase"] == "receiving" and c["total"] and c["done"] >= fraction * c["total"]:
                return
        time.sleep(0.3)
    raise AssertionError(f"no PC reached {fraction:.0%}")


def check_disks(source: Source, targets: list[Path], tmp: Path) -> None:
    """Every target is the same bytes, and the first holds a clean ext4 with the files."""
    digests = {hashlib.sha256(t.read_bytes()).hexdigest() for t in targets}
    assert len(digests) == 1, "the PCs' disks differ"
    with helpers.attached(targets[0]) as device:
        dev = helpers.node(device, 1)
        check = helpers.fsck(dev, "ext4")
        assert check.returncode == 0, check.stdout + check.stderr
        assert helpers.read_files(dev, "ext4", tmp) == source.files


def ok(process: Process) -> int:
    """The PC's chunk count by HTTP, after checking it ended OK."""
    code = process.wait(240)
    line = process.result()
    assert code == 0 and line.startswith("HOURGLASS-RESULT: OK"), process.text
    assert "written and verified" in line
    return int(re.search(r"(\d+) by HTTP", line).group(1))  # type: ignore[union-attr]


def test_a_room_of_four_with_a_lossy_pc(lab: Room, source: Source, tmp_path: Path) -> None:
    lab.add("srv", PORT_MBIT)
    for name in ("r1", "r2", "r3", "r4"):
        lab.add(name, PORT_MBIT)
    lab.loss("r4", 1)
    server = serve(lab, source, "--clients", "4")
    targets = [tmp_path / f"{name}.img" for name in ("r1", "r2", "r3", "r4")]
    with contextlib.ExitStack() as disks:  # each PC's disk a loop device, old data on it
        for t in targets:
            helpers.garbage_file(t, source.disk_mib * MiB)
        devices = [disks.enter_context(helpers.attached(t)) for t in targets]
        pcs = [receive(lab, t.stem, Path(d)) for t, d in zip(targets, devices, strict=True)]
        for pc in pcs:
            ok(pc)
    assert server.wait(60) == 0, server.text
    assert "4 of 4 PCs restored and verified" in server.result()
    check_disks(source, targets, tmp_path)
    print(f"\nroom of 4 at {PORT_MBIT} Mbit/s, r4 with 1 % loss, onto loop devices:")
    for pc in pcs:
        print(f"  {pc.name}: {pc.seconds:.1f} s  {pc.result()}")
    print(f"  server: {server.result()}")


def test_one_pc_alone(lab: Room, source: Source, tmp_path: Path) -> None:
    """The reference for the room's times, and a session of one."""
    lab.add("srv", PORT_MBIT)
    lab.add("r1", PORT_MBIT)
    server = serve(lab, source, "--clients", "1")
    pc = receive(lab, "r1", tmp_path / "r1.img")
    ok(pc)
    assert server.wait(60) == 0, server.text
    print(f"\none PC at {PORT_MBIT} Mbit/s: {pc.seconds:.1f} s  {pc.result()}")


def test_a_late_joiner_and_a_pc_without_multicast(
    lab: Room, source: Source, tmp_path: Path
) -> None:
    lab.add("srv", PORT_MBIT)
    for name in ("r1", "r2", "r3"):
        lab.add(name, PORT_MBIT)
    lab.no_multicast("r3")
    server = serve(lab, source, "--clients", "3")
    targets = {name: tmp_path / f"{name}.img" for name in ("r1", "r2", "r3", "r4")}
    pcs = {name: receive(lab, name, targets[name]) for name in ("r1", "r2", "r3")}
    wait_for_progress(lab, "r1", 0.5)
    lab.add("r4", PORT_MBIT)
    pcs["r4"] = receive(lab, "r4", targets["r4"])
    by_http = {name: ok(pc) for name, pc in pcs.items()}
    assert server.wait(60) == 0, server.text
    assert "4 of 4 PCs restored and verified" in server.result()
    assert "0 chunks by multicast" in pcs["r3"].result(), "r3 gets no multicast"
    assert by_http["r3"] > 0
    check_disks(source, list(targets.values()), tmp_path)
    print("\nlate joiner (r4, at 50 %) and no multicast (r3):")
    for name, pc in pcs.items():
        print(f"  {name}: {pc.seconds:.1f} s  {pc.result()}")


def test_a_killed_pc_is_failed_and_the_others_finish(
    lab: Room, source: Source, tmp_path: Path
) -> None:
    lab.add("srv", PORT_MBIT)
    for name in ("r1", "r2", "r3"):
        lab.add(name, PORT_MBIT)
    server = serve(lab, source, "--clients", "3")
    targets = [tmp_path / f"{name}.img" for name in ("r1", "r2", "r3")]
    pcs = [receive(lab, t.stem, t) for t in targets]
    wait_for_progress(lab, "r1", 0.3)
    victim = pcs[1]
    killed_at = time.monotonic()
    for pid in subprocess.run(["ip", "netns", "pids", "hgl-r2"], capture_output=True,
                              text=True).stdout.split():  # fmt: skip
        os.kill(int(pid), signal.SIGKILL)
    victim.wait(30)
    while not any("FAILED no report for 15 s" in line for line in server.lines):
        assert time.monotonic() - killed_at < 60, server.text
        time.sleep(0.2)
    failed_after = time.monotonic() - killed_at
    for pc in (pcs[0], pcs[2]):
        ok(pc)
    assert server.wait(60) == 1, server.text
    assert "FAILED 2 of 3 PCs" in server.result()
    print(f"\nkilled PC: FAILED at the server {failed_after:.1f} s after the kill")
    for pc in (pcs[0], pcs[2]):
        print(f"  {pc.name}: {pc.seconds:.1f} s  {pc.result()}")
    check_disks(source, [targets[0], targets[2]], tmp_path)


def test_a_pc_on_a_quarter_rate_port(lab: Room, source: Source, tmp_path: Path) -> None:
    lab.add("srv", PORT_MBIT)
    for name in ("r1", "r2", "r3"):
        lab.add(name, PORT_MBIT)
    lab.add("r4", PORT_MBIT / 4)
    server = serve(lab, source, "--clients", "4")
    targets = [tmp_path / f"{name}.img" for name in ("r1", "r2", "r3", "r4")]
    pcs = [receive(lab, t.stem, t) for t in targets]
    for pc in pcs:
        ok(pc)
    assert server.wait(60) == 0, server.text
    check_disks(source, targets, tmp_path)
    print(f"\nr4 on a {PORT_MBIT / 4:g} Mbit/s port, the others at {PORT_MBIT}:")
    for pc in pcs:
        print(f"  {pc.name}: {pc.seconds:.1f} s  {pc.result()}")


def test_an_unattended_pc_joins_from_its_boot_parameters(
    lab: Room, source: Source, tmp_path: Path
) -> None:
    """What a PC that network-booted the lab's entry runs: `hourglass unattended` with
    hourglass.run=restore hourglass.lab=URL (the repository, snapshot and key come from the
    session), onto a disk, with one result line."""
    lab.add("srv", PORT_MBIT)
    lab.add("r1", PORT_MBIT)
    server = serve(lab, source, "--clients", "1")
    image = tmp_path / "disk.img"
    helpers.garbage_file(image, source.disk_mib * MiB)
    cmdline = tmp_path / "cmdline"
    with helpers.attached(image) as disk:
        cmdline.write_text(
            f"quiet hourglass.run=restore hourglass.lab={URL} hourglass.target={disk} "
            "hourglass.after=poweroff\n"
        )
        popen = lab.run(
            "r1", "python", "-m", "imaging.cli.main", "unattended", "--cmdline-file",
            str(cmdline), "--no-after", stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        pc = Process("r1", popen)
        assert pc.wait(240) == 0, pc.text
        line = pc.result()
        assert line.startswith("HOURGLASS-RESULT: OK lab restore of ") and disk in line, line
        assert "written, verified" in line
    assert server.wait(60) == 0, server.text
    check_disks(source, [image], tmp_path)
    print(f"\nunattended lab PC: {pc.seconds:.1f} s  {line}")


FORGE = """
import json, socket, sys, time, urllib.request, zlib
sys.path.insert(0, sys.argv[2])
from imaging.lab import datagram
session = json.loads(urllib.request.urlopen(sys.argv[1] + "/session").read())
sid = bytes.fromhex(session["id"])
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
garbage = bytes(range(256)) * 12  # a 3072-byte "chunk" of 3 fragments, CRCs right
end = time.monotonic() + float(sys.argv[3])
sent = 0
while time.monotonic() < end:
    for n in range(session["chunks"]):
        for f in range(3):
            a, b = datagram.fragment_span(len(garbage), f)
            sock.sendto(datagram.pack(sid, 0, 0, n, f, 3, len(garbage), garbage[a:b]),
                        (session["group"], session["port"]))
            sent += 1
    time.sleep(0.05)
print(sent)
"""


def test_forged_datagrams_are_never_written(lab: Room, source: Source, tmp_path: Path) -> None:
    """A host of the room sends datagrams of the session (right id, right CRC) with garbage
    for every chunk: the PC finds each such chunk wrong by its id, fetches it whole instead,
    and its disk verifies."""
    lab.add("srv", PORT_MBIT)
    lab.add("r1", PORT_MBIT)
    lab.add("evil", PORT_MBIT)
    server = serve(lab, source, "--clients", "2")  # never 2: it waits, the forger sends
    target = tmp_path / "r1.img"
    forger = lab.run("evil", "python", "-c", FORGE, URL, str(Path.cwd()), "20",
                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    pc = receive(lab, "r1", target)
    ok(pc)
    line = pc.result()
    assert "damaged in transit and fetched again" in line, line
    forger.wait(60)
    server.popen.send_signal(signal.SIGINT)
    server.wait(30)
    check_disks(source, [target], tmp_path)
    print(f"\nforged datagrams: {line}")


def test_the_datagram_checks_its_header_and_payload() -> None:
    sid = bytes(range(8))
    payload = b"x" * datagram.FRAGMENT
    packet = datagram.pack(sid, 7, 1, 3, 0, 2, datagram.FRAGMENT + 10, payload)
    fragment = datagram.unpack(packet)
    assert fragment is not None
    assert (fragment.sequence, fragment.chunk, fragment.fragment) == (7, 3, 0)
    assert fragment.payload == payload
    for position in (0, 12, 30, datagram.HEADER.size + 5):  # magic, session, chunk, payload
        damaged = bytearray(packet)
        damaged[position] ^= 1
        assert datagram.unpack(bytes(damaged)) is None, position
    assert datagram.unpack(packet[:-1]) is None  # a short fragment
    assert datagram.unpack(b"HGLB") is None
