"""`make bench`, the lab section: one snapshot to a room of PCs at once (`hourglass lab`),
against udpcast and parallel unicast copies on the same simulated room (issue 19).

1. The room is network namespaces on a bridge (tests/imaging/lab/room.py, the test suite's
   own): the server in ``hgb-srv`` at 10.77.6.1, each PC a namespace; every port (the
   server's and each PC's) capped with tbf at PORT_MBIT both ways; loss with nftables.
2. **Data**: a GPT disk image with one ext4 partition holding about 450 MB of real files from
   /usr (the bench's usual fixed shuffle), backed up once into an encrypted repository.
3. **Sessions**: `hourglass lab serve --clients N --no-pxe` in the server's namespace, `hourglass
   lab receive --yes --progress none` in each PC's onto an image file. A case's time runs from
   the start of the PCs' processes to the last PC's `HOURGLASS-RESULT` line. Cases: one PC
   alone (T1, median of 3), rooms of 4 and 8, 1 % loss on one PC of 4, one PC of 4 on a
   quarter-rate port, one PC of 4 killed at 30 % (the others' time and how long until the
   server says FAILED), a PC joining a room of 3 at 50 % (its time from the session's start),
   and a room of 8 without multicast (everything by the lab's HTTP fill-in).
4. **Peers** on the same room: udp-sender/udp-receiver (Debian `udpcast`) sending the bytes the
   lab multicasts (the snapshot's chunk files, concatenated) to 1 and 8 receivers, and the same
   file fetched by 8 PCs at once from `python -m http.server` (plain unicast).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.run import PASSPHRASE, WORK, MiB, Results, Run, copy_usr, sh
from tests.imaging.disks import helpers
from tests.imaging.lab.room import Room

PORT_MBIT = 200
SERVER = "10.77.6.1"
URL = f"http://{SERVER}:8470"
DISK_MIB = 768
DATA = 450 * MiB
ROOM = 8
PREFIX = "hgb"  # not the tests' "hgl": a test run may share the machine
SESSION_TIMEOUT = 900


@dataclass
class Process:
    """A process of the room, its output read as it comes, with the time of its result
    line (monotonic)."""

    name: str
    popen: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    result_at: float | None = None
    ended: float | None = None

    def __post_init__(self) -> None:
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if line.startswith("HOURGLASS-RESULT:") and self.result_at is None:
                self.result_at = time.monotonic()
            self.lines.append(line.rstrip("\n"))
        self.popen.wait()
        self.ended = time.monotonic()

    def wait(self, timeout: float = SESSION_TIMEOUT) -> int:
        code = self.popen.wait(timeout)
        self._reader.join(10)
        return code

    def results(self) -> list[str]:
        return [line for line in self.lines if line.startswith("HOURGLASS-RESULT:")]

    @property
    def text(self) -> str:
        return "\n".join(self.lines[-40:])


@dataclass
class Source:
    repo: Path
    passphrase_file: Path
    payload: Path  # the chunk files of the snapshot, concatenated: what udpcast sends
    files_bytes: int


@dataclass
class Case:
    """One session of the lab: each PC's seconds from the session's start to its result
    line (None: no OK line), and what else the case measured."""

    pcs: dict[str, float | None]
    lines: dict[str, str]
    failed_after: float | None = None
    cpu: float = 0.0  # seconds of CPU of the session's processes (server and PCs)

    @property
    def last(self) -> float:
        times = [t for t in self.pcs.values() if t is not None]
        return max(times) if times else float("nan")


def make_source(hourglass: str, work: Path) -> Source:
    """A GPT disk with one ext4 partition of /usr files, backed up once."""
    image = work / "pc.img"
    helpers.make_gpt_disk(image, [helpers.GptPart(1, "ext4", DISK_MIB - 4, "8300", "labroot",
                                                  "root")], DISK_MIB)  # fmt: skip
    repo, passphrase_file = work / "repo", work / "passphrase"
    passphrase_file.write_text(PASSPHRASE + "\n")
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    with helpers.attached(image) as device:
        dev = helpers.node(device, 1)
        helpers.make_fs(dev, "ext4", "labroot")
        mnt = work / "mnt"
        mnt.mkdir()
        sh("mount", dev, mnt)
        try:
            copied = copy_usr(mnt, DATA, seed=19)
        finally:
            sh("umount", mnt)
        sh(hourglass, "init", repo, env=env)
        sh(hourglass, "backup", "--repo", repo, "--passphrase-file", passphrase_file, device,
           env=env)  # fmt: skip
    image.unlink()
    payload = work / "payload.bin"
    with payload.open("wb") as out:
        for chunk in sorted((repo / "chunks").rglob("*")):
            if chunk.is_file():
                out.write(chunk.read_bytes())
    return Source(repo, passphrase_file, payload, copied)


class Lab:
    """The room of one case and the lab's processes in it."""

    def __init__(self, room: Room, hourglass: str, source: Source, work: Path) -> None:
        self.room, self.hourglass, self.source, self.work = room, hourglass, source, work
        self.pcs: dict[str, Process] = {}
        self.t0 = 0.0
        self.failed_after: float | None = None
        self.server: Process | None = None

    def serve(self, *extra: str) -> Process:
        popen = self.room.run(
            "srv", self.hourglass, "lab", "serve", "--repo", str(self.source.repo),
            "--passphrase-file", str(self.source.passphrase_file), "--snapshot", "latest",
            "--no-pxe", "--address", SERVER, *extra,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        server = Process("server", popen)
        deadline = time.monotonic() + 120
        while not any("Serving snapshot" in line for line in server.lines):
            if popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the lab server did not come up:\n{server.text}")
            time.sleep(0.1)
        return server

    def receive(self, name: str) -> Process:
        target = self.work / f"{name}.img"
        target.unlink(missing_ok=True)
        popen = self.room.run(
            name, self.hourglass, "lab", "receive", "--server", URL, "--yes", "--progress",
            "none", str(target), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.pcs[name] = Process(name, popen)
        return self.pcs[name]

    def status(self) -> dict[str, object]:
        out = subprocess.run(
            ["ip", "netns", "exec", f"{PREFIX}-srv", "python3", "-c",
             f"import urllib.request; print(urllib.request.urlopen('{URL}/status').read().decode())"],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        value: dict[str, object] = json.loads(out)
        return value

    def wait_for_progress(self, fraction: float, timeout: float = 300) -> None:
        """Until the first PC that reports has restored ``fraction`` of its disk."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            clients = self.status()["clients"]
            assert isinstance(clients, list)
            for c in clients:
                if c["phase"] == "receiving" and c["total"] and c["done"] >= fraction * c["total"]:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"no PC reached {fraction:.0%}")

    def case(self) -> Case:
        pcs: dict[str, float | None] = {}
        lines: dict[str, str] = {}
        for name, pc in self.pcs.items():
            pc.wait()
            found = pc.results()
            lines[name] = found[0] if len(found) == 1 else f"{len(found)} result lines"
            ok = len(found) == 1 and found[0].startswith("HOURGLASS-RESULT: OK")
            ok = ok and "written and verified" in found[0]
            pcs[name] = pc.result_at - self.t0 if ok and pc.result_at is not None else None
        return Case(pcs, lines)


def session(
    hourglass: str,
    source: Source,
    work: Path,
    clients: int,
    *,
    prepare: Callable[[Room], None] = lambda room: None,
    during: Callable[[Lab], None] = lambda lab: None,
    slow: tuple[str, ...] = (),
) -> tuple[Case, str]:
    """A session of ``clients`` PCs (r1, r2, ...); ``prepare`` changes the room before the
    start (loss, no multicast), ``during`` acts while it runs (a kill, a late joiner). The
    case, and the server's result line."""
    names = [f"r{i + 1}" for i in range(clients)]
    before = os.times()
    with Room(PREFIX, "10.77.6") as room:
        room.add("srv", PORT_MBIT)
        for name in names:
            room.add(name, PORT_MBIT / 4 if name in slow else PORT_MBIT)
        prepare(room)
        lab = Lab(room, hourglass, source, work)
        server = lab.server = lab.serve("--clients", str(clients))
        lab.t0 = time.monotonic()
        for name in names:
            lab.receive(name)
        during(lab)
        case = lab.case()
        server.wait(120)
        found = server.results()
        case.failed_after = lab.failed_after
    after = os.times()  # every process of the room was waited for: its CPU is counted
    case.cpu = after.children_user - before.children_user
    case.cpu += after.children_system - before.children_system
    for name in lab.pcs:
        (work / f"{name}.img").unlink(missing_ok=True)
    return case, found[0] if found else "no result line:\n" + server.text


def kill_at(fraction: float, victim: str) -> Callable[[Lab], None]:
    def during(lab: Lab) -> None:
        lab.wait_for_progress(fraction)
        pids = subprocess.run(["ip", "netns", "pids", f"{PREFIX}-{victim}"],
                              capture_output=True, text=True).stdout.split()  # fmt: skip
        killed = time.monotonic()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
        # the server's own line, not /status: the session may end the moment it says it
        assert lab.server is not None
        while time.monotonic() - killed < 120:
            if any("FAILED no report" in line for line in lab.server.lines):
                lab.failed_after = time.monotonic() - killed
                return
            time.sleep(0.1)

    return during


def join_at(fraction: float, name: str) -> Callable[[Lab], None]:
    def during(lab: Lab) -> None:
        lab.wait_for_progress(fraction)
        lab.room.add(name, PORT_MBIT)
        lab.receive(name)

    return during


def udpcast(source: Source, work: Path, receivers: int) -> float:
    """Seconds from the start of udp-sender and the receivers to the last receiver's end;
    each receiver's file checked against the payload's size."""
    names = [f"r{i + 1}" for i in range(receivers)]
    with Room(PREFIX, "10.77.6") as room:
        room.add("srv", PORT_MBIT)
        for name in names:
            room.add(name, PORT_MBIT)
        start = time.monotonic()
        sender = room.run("srv", "udp-sender", "--file", str(source.payload), "--interface",
                          "eth0", "--min-receivers", str(receivers), "--nokbd",
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        outs = [work / f"udp-{name}.bin" for name in names]
        procs = [room.run(name, "udp-receiver", "--file", str(out), "--interface", "eth0",
                          "--nokbd", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                 for name, out in zip(names, outs, strict=True)]  # fmt: skip
        codes = [p.wait(SESSION_TIMEOUT) for p in procs]
        seconds = time.monotonic() - start
        sender.wait(60)
    size = source.payload.stat().st_size
    bad = [o.name for o, c in zip(outs, codes, strict=True) if c or o.stat().st_size != size]
    for out in outs:
        out.unlink(missing_ok=True)
    if bad:
        raise RuntimeError(f"udpcast: {', '.join(bad)} failed or short")
    return seconds


def http_copies(source: Source, work: Path, receivers: int) -> float:
    """The payload fetched by ``receivers`` PCs at once from `python -m http.server`."""
    names = [f"r{i + 1}" for i in range(receivers)]
    with Room(PREFIX, "10.77.6") as room:
        room.add("srv", PORT_MBIT)
        for name in names:
            room.add(name, PORT_MBIT)
        server = room.run("srv", "python", "-m", "http.server", "--bind", SERVER, "8471",
                          "--directory", str(source.payload.parent),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        url = f"http://{SERVER}:8471/{source.payload.name}"
        deadline = time.monotonic() + 30
        while subprocess.run(["ip", "netns", "exec", f"{PREFIX}-r1", "curl", "-sfI", url],
                             capture_output=True).returncode:  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError("http.server did not come up")
            time.sleep(0.2)
        outs = [work / f"http-{name}.bin" for name in names]
        start = time.monotonic()
        procs = [room.run(name, "curl", "-sf", "-o", str(out), url)
                 for name, out in zip(names, outs, strict=True)]  # fmt: skip
        codes = [p.wait(SESSION_TIMEOUT) for p in procs]
        seconds = time.monotonic() - start
        server.terminate()
    size = source.payload.stat().st_size
    bad = [o.name for o, c in zip(outs, codes, strict=True) if c or o.stat().st_size != size]
    for out in outs:
        out.unlink(missing_ok=True)
    if bad:
        raise RuntimeError(f"http copies: {', '.join(bad)} failed or short")
    return seconds


def ensure_tools() -> None:
    """udpcast and nftables from Debian when missing (the bench's own set-up)."""
    missing = [pkg for tool, pkg in (("udp-sender", "udpcast"), ("nft", "nftables"))
               if shutil.which(tool) is None]  # fmt: skip
    if missing:
        sh("apt-get", "install", "-y", *missing)
    for tool in ("sgdisk", "partx", "tc", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make deps` (Debian packages).")


def lab_section(hourglass: str, results: Results, *, room_size: int = ROOM,
                repeats: int = 3) -> None:  # fmt: skip
    """The lab section of `make bench` (module docstring)."""
    print("Lab:", flush=True)
    ensure_tools()
    work = WORK / "lab"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    x = results.extra
    targets = target_dir(work, room_size)
    try:
        source = make_source(hourglass, work)
        x["lab_targets_in_ram"] = float(targets != work)
        payload = source.payload.stat().st_size
        x["lab_files_bytes"] = source.files_bytes
        x["lab_payload_bytes"] = payload
        x["lab_port_mbit"] = PORT_MBIT
        print(f"  {source.files_bytes / MiB:.0f} MiB of files, {payload / MiB:.0f} MiB of "
              f"chunks, ports at {PORT_MBIT} Mbit/s", flush=True)  # fmt: skip
        x["lab_load_before"] = os.getloadavg()[0]

        def record(step: str, case: Case, server: str, note: str = "") -> Case:
            bad = [n for n, t in case.pcs.items() if t is None]
            times = ", ".join(f"{n} {t:.1f}" if t is not None else f"{n} -"
                              for n, t in case.pcs.items())  # fmt: skip
            times += f"; CPU {case.cpu:.0f} s"
            print(f"  {step:<28} {case.last:7.2f} s  ({times})", flush=True)
            if bad:
                print("    not OK: " + "; ".join(f"{n}: {case.lines[n]}" for n in bad))
            results.runs.append(Run("hourglass lab", step, case.last, 0,
                                    note=(note + "; " if note else "") + times))  # fmt: skip
            results.notes.append(f"{step}: server {server}")
            results.notes.extend(f"{step}: {n} {line}" for n, line in case.lines.items())
            return case

        alone = []
        for _ in range(repeats):
            case, server = session(hourglass, source, targets, 1)
            alone.append(case.last)
            record("lab 1 PC (one run)", case, server)
            results.runs.pop()
        t1 = statistics.median(alone)
        results.runs.append(Run("hourglass lab", "lab 1 PC", t1, 0,
                                note=f"median of {repeats} ({min(alone):.2f} to {max(alone):.2f} s)"))  # fmt: skip
        x["lab_T1_s"] = t1
        print(f"  T1 = {t1:.2f} s (median of {repeats})", flush=True)

        room4 = record("lab room of 4", *session(hourglass, source, targets, 4), "one run")
        x["lab_room4_s"] = room4.last
        room8 = record(f"lab room of {room_size}", *session(hourglass, source, targets, room_size),
                       "one run")  # fmt: skip
        x["lab_room8_s"] = room8.last
        x["lab_room8_cpu_s"] = room8.cpu
        x["lab_room8_ok"] = sum(t is not None for t in room8.pcs.values())
        x["lab_room8_n"] = room_size

        lossy = record(
            "lab 1 % loss on r4 of 4",
            *session(hourglass, source, targets, 4, prepare=lambda room: room.loss("r4", 1)),
            "one run",
        )
        x["lab_loss_s"] = lossy.last
        x["lab_loss_pc_ok"] = float(lossy.pcs["r4"] is not None)

        slow = record(f"lab r4 of 4 at {PORT_MBIT / 4:g} Mbit/s",
                      *session(hourglass, source, targets, 4, slow=("r4",)), "one run")  # fmt: skip
        others = [t for n, t in slow.pcs.items() if n != "r4"]
        x["lab_quarter_others_s"] = max(t for t in others if t is not None) if all(others) \
            else float("nan")  # fmt: skip
        x["lab_quarter_slow_pc_s"] = slow.pcs["r4"] or float("nan")

        killed_case, server = session(hourglass, source, targets, 4, during=kill_at(0.3, "r2"))
        killed_case.pcs.pop("r2")
        killed = record("lab r2 of 4 killed at 30 %", killed_case, server, "one run")
        x["lab_killed_others_s"] = killed.last
        x["lab_killed_failed_after_s"] = killed.failed_after or float("nan")
        x["lab_killed_server_failed"] = float("FAILED 3 of 4" in server)

        late = record(
            "lab r4 joins 3 at 50 %",
            *session(hourglass, source, targets, 3, during=join_at(0.5, "r4")),
            "one run",
        )
        x["lab_late_s"] = late.pcs.get("r4") or float("nan")

        unicast = record(f"lab room of {room_size}, no multicast", *session(
            hourglass, source, work, room_size,
            prepare=lambda room: [room.no_multicast(f"r{i + 1}") for i in range(room_size)]),
            "one run; all by the lab's HTTP fill-in")  # fmt: skip
        x["lab_unicast_room_s"] = unicast.last

        for n in (1, room_size):
            seconds = udpcast(source, targets, n)
            results.runs.append(Run("udpcast", f"lab {n} receivers", seconds, 0, note="one run"))
            print(f"  udpcast to {n}: {seconds:.2f} s", flush=True)
            x[f"lab_udpcast_{n}_s"] = seconds
        seconds = http_copies(source, targets, room_size)
        results.runs.append(Run("http.server + curl", f"lab {room_size} at once", seconds, 0,
                                note="one run"))  # fmt: skip
        print(f"  {room_size} HTTP copies at once: {seconds:.2f} s", flush=True)
        x[f"lab_http_{room_size}_s"] = seconds
        integrity = [room4, room8, lossy, slow, killed, late, unicast]
        x["lab_all_ok"] = float(all(t is not None for c in integrity for t in c.pcs.values()))
        x["lab_load_after"] = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(targets, ignore_errors=True)


def target_dir(work: Path, pcs: int) -> Path:
    """Where the PCs' disks go: tmpfs when the memory holds them all twice over. Real PCs
    each write their own disk; here they would all share the bench's one, on which a room
    of 8 writes and reads back 4.3 GB: that disk would be measured with the network."""
    available = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            available = int(line.split()[1]) * 1024
    if available > 2 * (pcs + 1) * DISK_MIB * MiB and Path("/dev/shm").is_dir():
        ram = Path("/dev/shm") / "hourglass-bench-lab"
        shutil.rmtree(ram, ignore_errors=True)
        ram.mkdir()
        return ram
    return work


def lab_lines(results: Results) -> list[str]:
    """The lab section of results.md."""
    x = results.extra
    if "lab_T1_s" not in x:
        return []
    rows = [r for r in results.runs if r.step.startswith("lab ")]
    return [
        "## The lab (one snapshot to a room of PCs)",
        "",
        f"A GPT disk with {x.get('lab_files_bytes', 0) / MiB:.0f} MiB of /usr files on ext4, "
        f"{x.get('lab_payload_bytes', 0) / MiB:.0f} MiB of chunks; a room of network "
        f"namespaces, every port capped at {x.get('lab_port_mbit', 0):.0f} Mbit/s (tbf). Seconds "
        "from the start of the PCs' processes to the last PC's result line; every PC restores "
        "onto an image file and verifies it"
        + (
            " (the image files in RAM, tmpfs: one disk shared by all the PCs would be measured "
            "instead of the network)"
            if x.get("lab_targets_in_ram")
            else " (the image files on the bench's one disk, shared by all the PCs)"
        )
        + ". udpcast and curl move the snapshot's chunk files "
        "(the bytes the lab multicasts) into a file, without restoring or verifying. Load "
        f"average (1 min) before {x.get('lab_load_before', 0):.2f}, after "
        f"{x.get('lab_load_after', 0):.2f} (a shared 2-core machine).",
        "",
        "| tool | case | seconds | note |",
        "|---|---|---:|---|",
        *[
            f"| {r.tool} | {r.step.removeprefix('lab ')} | {r.seconds:.2f} | {r.note} |"
            for r in rows
        ],
        "",
    ]


def lab_targets(results: Results) -> list[tuple[str, str, str]]:
    """Issue 19's targets, each as a ratio against one PC alone (T1)."""
    x = results.extra
    t1 = x.get("lab_T1_s")
    if t1 is None:
        return [("lab: every case", "not measured", "no")]

    def ratio(what: str, key: str, limit: float) -> tuple[str, str, str]:
        value = x.get(key, float("nan"))
        r = value / t1
        return (what, f"{value:.1f} s = {r:.2f}x T1 ({t1:.1f} s)", "yes" if r <= limit else "no")

    n = int(x.get("lab_room8_n", ROOM))
    extra_loss = x.get("lab_loss_s", float("nan")) / x.get("lab_room4_s", float("nan")) - 1
    lost = x.get("lab_killed_others_s", float("nan")) - x.get("lab_room4_s", float("nan"))
    failed = x.get("lab_killed_failed_after_s", float("nan"))
    room = ratio(f"lab: a room of {n} at most 1.25x one PC", "lab_room8_s", 1.25)
    cpu, cores = x.get("lab_room8_cpu_s"), int(results.machine.get("cores") or os.cpu_count() or 1)
    if cpu:
        # Every PC of the room runs on this machine: its CPU time, shared by these cores, is
        # a floor a real room (a CPU per PC) does not have.
        floor = f"; its processes used {cpu:.0f} s of CPU: {cpu / cores:.1f} s on {cores} cores"
        room = (room[0], room[1] + floor, room[2])
    return [
        room,
        (
            "lab: 1 % loss on one PC at most +5 % (vs the room of 4), that PC OK",
            f"{100 * extra_loss:+.1f} %, PC {'OK' if x.get('lab_loss_pc_ok') else 'not OK'}",
            "yes" if extra_loss <= 0.05 and x.get("lab_loss_pc_ok") else "no",
        ),
        ratio(
            "lab: one PC on a quarter-rate port: the others at most 1.25x",
            "lab_quarter_others_s",
            1.25,
        ),
        (
            "lab: one PC killed: the others lose at most 10 s (vs the room of 4)",
            f"{lost:+.1f} s",
            "yes" if lost <= 10 else "no",
        ),
        (
            "lab: the killed PC FAILED within 30 s",
            f"{failed:.1f} s",
            "yes" if failed <= 30 and x.get("lab_killed_server_failed") else "no",
        ),
        ratio("lab: a PC joining at 50 % at most 1.5x one PC", "lab_late_s", 1.5),
        (
            "lab: every PC's disk verified, one result line each",
            "all OK" if x.get("lab_all_ok") else "not all OK",
            "yes" if x.get("lab_all_ok") else "no",
        ),
    ]


def write_lab_results(results: Results) -> None:
    """`--only lab`: the section alone, in bench/work."""
    (WORK / "results-lab.json").write_text(
        json.dumps(
            {
                "extra": results.extra,
                "runs": [r.__dict__ for r in results.runs],
                "notes": results.notes,
            },
            indent=1,
        )
    )
    lines = [
        "# Benchmark results: the lab section alone",
        "",
        f"Machine: {results.machine.get('cpu')}, {results.machine.get('cores')} cores; run "
        f"{results.machine.get('date')}.",
        "",
        *lab_lines(results),
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {w} | {m} | {ok} |" for w, m, ok in lab_targets(results)],
        "",
        *[f"- {note}" for note in results.notes if note.startswith("lab ")],
        "",
    ]
    (WORK / "results-lab.md").write_text("\n".join(lines))
    print(f"Wrote {WORK / 'results-lab.md'}", file=sys.stderr)
