"""`make bench`: Hourglass against the tools a user would pick instead, in one run.

Builds a 3 GB ext4 partition on a loop device holding about 2 GB of real files from /usr,
drops the page cache before every measurement, and measures first backup, incremental
backup after ~1% of the data changed, and restore, for Hourglass, Clonezilla's pipeline
(partclone + zstd), restic and Borg; plus the physical limits (raw read; hash, compression
and cipher speed) and Hourglass-only figures. Writes bench/results.md, bench/results.json
and bench/results.png. Needs root (loop devices, mount).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import blake3
import zstandard
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imaging.repository.codec import DEFAULT_BLOCK_SIZE
from tests.s3server import free_port

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORK = HERE / "work"
GiB = 1024**3
MiB = 1024**2
PASSPHRASE = "benchmark passphrase, not a secret"
BIG_FILE = "big.bin"  # the large file restored alone
BIG_SIZE = 512 * MiB
TRACKED = "tracked.txt"  # the file whose versions are listed
VERSIONS_SNAPSHOTS = 20
REPEATS = 3  # each compared step runs this many times; the median counts


@dataclass
class Run:
    tool: str
    step: str
    seconds: float
    rss_kb: int
    stored: int | None = None
    note: str = ""
    requests: dict[str, int] | None = None
    """Object-store runs: the requests radosgw served during the run (its perf counters)."""
    load: float | None = None
    """Object-store runs: the 1-minute load average when the run started."""


@dataclass
class Results:
    machine: dict[str, str] = field(default_factory=dict)
    limits: dict[str, float] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def get(self, tool: str, step: str) -> Run | None:
        return next((r for r in self.runs if r.tool == tool and r.step == step), None)


def sh(*argv: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], check=True, capture_output=True, text=True, env=env
    )


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def timed(
    tool: str, step: str, command: str, env: dict[str, str] | None = None, durable: bool = False
) -> Run:
    """Run a shell pipeline under /usr/bin/time -v (peak RSS of the largest process).

    ``durable``: the time includes a sync, so a tool that leaves its writes in the page cache
    (a restore through `> /dev/loopN`) is timed until they are on the target, as one that
    writes with O_DIRECT is.
    """
    drop_caches()
    if durable:
        command = f"{command} && sync"
    wrapped = f"/usr/bin/time -v -o {WORK}/time.txt bash -o pipefail -c {shlex_quote(command)}"
    start = time.monotonic()
    result = subprocess.run(
        wrapped, shell=True, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
    seconds = time.monotonic() - start
    if result.returncode != 0:
        raise SystemExit(f"{tool} {step} failed: {result.stderr[-2000:]}")
    found = re.search(
        r"Maximum resident set size \(kbytes\): (\d+)", (WORK / "time.txt").read_text()
    )
    rss = int(found.group(1)) if found else 0
    print(f"  {tool:<16} {step:<12} {seconds:7.2f} s  {rss / 1024:7.1f} MB RSS", flush=True)
    return Run(tool, step, seconds, rss)


def repeated(make: Callable[[], Run], reset: Callable[[], None] | None = None) -> Run:
    """The median of REPEATS runs of ``make`` (``reset`` puts the state back before each
    run after the first); the largest peak RSS of them. One run on a shared 2-core machine
    varied by 20 % from one `make bench` to the next."""
    runs = []
    for i in range(REPEATS):
        if i and reset is not None:
            reset()
        runs.append(make())
    return median_of(runs)


def median_of(runs: list[Run]) -> Run:
    """The run of median time (with its stored bytes and requests), the largest peak RSS."""
    runs = sorted(runs, key=lambda r: r.seconds)
    middle = runs[len(runs) // 2]
    return Run(
        middle.tool,
        middle.step,
        middle.seconds,
        max(r.rss_kb for r in runs),
        stored=middle.stored,
        note=f"median of {len(runs)} ({runs[0].seconds:.2f} to {runs[-1].seconds:.2f} s)"
        + (f"; {middle.note}" if middle.note else ""),
        requests=middle.requests,
        load=middle.load,
    )


def shlex_quote(text: str) -> str:

    return shlex.quote(text)


def loop(image: Path) -> str:
    return sh("losetup", "--show", "--find", image).stdout.strip()


def copy_usr(dest: Path, total: int, seed: int) -> int:
    """Copy real files from /usr in a fixed order until ``total`` bytes."""
    files = []
    for top in ("/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec"):
        for dirpath, _, names in os.walk(top):
            for name in sorted(names):
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    files.append(p)
    random.Random(seed).shuffle(files)
    written = 0
    for i, src in enumerate(files):
        if written >= total:
            break
        try:
            data = src.read_bytes()
        except OSError:
            continue
        target = dest / f"d{i % 97}" / f"{i}-{src.name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += len(data)
    return written


def write_big_file(target: Path, size: int, seed: int) -> int:
    """One large file of real content (concatenated /usr files), for the single-file restore."""
    files = [p for p in Path("/usr/lib").rglob("*") if p.is_file() and not p.is_symlink()]
    random.Random(seed).shuffle(files)
    written = 0
    with target.open("wb") as out:
        for src in files:
            if written >= size:
                break
            try:
                data = src.read_bytes()[: size - written]
            except OSError:
                continue
            out.write(data)
            written += len(data)
    return written


def block_digests(device: str) -> list[bytes]:
    """A short digest of every 4 KiB block of ``device`` (to count the blocks a change hit)."""
    digests = []
    with open(device, "rb", buffering=0) as f:
        while piece := f.read(4 * MiB):
            digests += [
                hashlib.blake2b(piece[i : i + 4096], digest_size=16).digest()
                for i in range(0, len(piece), 4096)
            ]
    return digests


def change_one_percent(mountpoint: Path, fraction: float = 0.01, seed: int = 42) -> int:
    """Rewrite about ``fraction`` of the data: new content in randomly chosen files."""
    files = sorted(
        p for p in mountpoint.rglob("*") if p.is_file() and p.name not in (BIG_FILE, TRACKED)
    )
    rng = random.Random(seed)
    rng.shuffle(files)
    total = sum(p.stat().st_size for p in files)
    changed = 0
    for p in files:
        if changed >= total * fraction:
            break
        size = p.stat().st_size
        p.write_bytes(rng.randbytes(size))
        changed += size
    return changed


# Where restic and Borg keep their caches (and Borg its security records): inside WORK, so
# that a repository put back for the next incremental run comes with the matching cache.
CACHES = {"restic": WORK / "restic-cache", "borg": WORK / "borg-base"}


def init_repo(name: str, repo: Path, hourglass: str, env: dict[str, str]) -> None:
    """An empty repository of tool ``name`` at ``repo`` (a directory for partclone's file)."""
    shutil.rmtree(repo, ignore_errors=True)
    full = {**os.environ, **env}
    if name == "hourglass":
        sh(hourglass, "init", repo, env=full)
    elif name == "partclone":
        repo.mkdir()
    elif name == "restic":
        sh("restic", "init", "--repo", repo, env=full)
    elif name == "borg":
        sh("borg", "init", "-e", "repokey", repo, env=full)


def keep_state(name: str, repo: Path) -> list[tuple[Path, Path]]:
    """Copies of a repository (and of the tool's cache) to put back between repeated runs."""
    saved = []
    for path in (repo, CACHES.get(name)):
        if path is not None and path.exists():
            copy = path.with_name(path.name + ".before")
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(path, copy, symlinks=True)
            saved.append((path, copy))
    return saved


def restore_state(saved: list[tuple[Path, Path]]) -> None:
    for path, copy in saved:
        shutil.rmtree(path)
        shutil.copytree(copy, path, symlinks=True)


def drop_state(saved: list[tuple[Path, Path]]) -> None:
    for _, copy in saved:
        shutil.rmtree(copy)


def limits(device: str, results: Results) -> None:

    drop_caches()
    out = sh("dd", f"if={device}", "of=/dev/null", "bs=4M", "iflag=direct").stderr
    results.limits["raw_read_MBps"] = float(re.search(r"([\d.]+) ([GM])B/s", out).group(1)) * (  # type: ignore[union-attr]
        1000 if " GB/s" in out else 1
    )
    with open(device, "rb") as f:
        f.seek(512 * MiB)
        sample = f.read(64 * MiB)
    bs = DEFAULT_BLOCK_SIZE  # what a new repository stores per chunk
    blocks = [sample[i : i + bs] for i in range(0, len(sample), bs)]

    def speed(fn: Callable[[bytes], object]) -> float:
        start = time.perf_counter()
        for b in blocks:
            fn(b)
        return len(sample) / (time.perf_counter() - start) / 1e6

    key = os.urandom(32)
    aead = AESGCM(key)
    z = zstandard.ZstdCompressor(level=3)
    results.limits["blake3_keyed_MBps_1core"] = speed(lambda b: blake3.blake3(b, key=key).digest())
    results.limits["zstd3_MBps_1core"] = speed(z.compress)
    results.limits["aes256gcm_MBps_1core"] = speed(lambda b: aead.encrypt(bytes(12), b, None))
    results.limits["zstd3_ratio"] = len(sample) / sum(len(z.compress(b)) for b in blocks)
    for name, value in results.limits.items():
        print(f"  limit {name:<26} {value:9.1f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=3 * GiB, help="partition size")
    parser.add_argument("--data", type=int, default=2 * GiB, help="bytes of files to copy")
    parser.add_argument("--skip-peers", action="store_true", help="Hourglass only")
    parser.add_argument(
        "--only",
        choices=["local", "s3", "agent", "lab"],
        help="run one section: local disks, the object store (radosgw), the agent or the lab "
        "(their results go to bench/work/results-s3.md, results-agent.md or results-lab.md, "
        "leaving "
        "bench/results.md alone)",
    )
    args = parser.parse_args()
    # SIGTERM unwinds like ^C: the loop devices are detached and radosgw is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    if os.geteuid() != 0:
        raise SystemExit("make bench needs root (loop devices, mount, drop_caches).")
    for tool in ("partclone.ext4", "zstd", "restic", "borg", "losetup"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: run `make deps` (Debian packages).")
    hourglass = hourglass_command()
    # An installed Hourglass is byte-compiled (pip, Debian's packages). With
    # PYTHONDONTWRITEBYTECODE set, as on the build machine, every command compiled the
    # package from source again: about 1 s of a 5 to 8 s `verify` on a cold cache.
    sh(sys.executable, "-m", "compileall", "-q", ROOT / "imaging", ROOT / "recovery_ui")
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    results = Results(
        machine={
            "cpu": next(
                (
                    line.split(":", 1)[1].strip()
                    for line in open("/proc/cpuinfo")
                    if line.startswith("model name")
                ),
                "?",
            ),
            "cores": str(os.cpu_count()),
            "kernel": os.uname().release,
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    )
    if args.only == "lab":  # its own disk and room: no 3 GiB partition
        from bench import lab

        lab.lab_section(hourglass, results)
        lab.write_lab_results(results)
        return 0
    source_img, target_img = WORK / "source.img", WORK / "target.img"
    for img in (source_img, target_img):
        with open(img, "wb") as f:
            f.truncate(args.size)
    sh("mkfs.ext4", "-q", "-F", source_img)
    src, dst = loop(source_img), loop(target_img)
    mnt = WORK / "mnt"
    mnt.mkdir()
    env = {
        "HOURGLASS_PASSPHRASE": PASSPHRASE,
        "RESTIC_PASSWORD": PASSPHRASE,
        "BORG_PASSPHRASE": PASSPHRASE,
        "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
        "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        "BORG_BASE_DIR": str(CACHES["borg"]),
        "RESTIC_CACHE_DIR": str(CACHES["restic"]),
    }
    try:
        sh("mount", src, mnt)
        copied = copy_usr(mnt, args.data - BIG_SIZE, seed=1)
        copied += write_big_file(mnt / BIG_FILE, BIG_SIZE, seed=2)
        (mnt / TRACKED).write_text("version 0\n")
        sh("umount", mnt)
        results.extra["data_bytes"] = copied
        print(f"Partition {args.size / GiB:.1f} GiB on {src} with {copied / GiB:.2f} GiB of files")
        print("Limits:")
        limits(src, results)

        peers = not args.skip_peers
        if args.only == "agent":
            from bench import agent

            agent.agent_section(hourglass, results)
        elif args.only != "s3":
            local_sections(hourglass, src, dst, mnt, env, copied, peers, results)
        if args.only == "s3":
            object_store_section(hourglass, src, dst, mnt, peers, results)
        elif args.only is None:
            try:
                object_store_section(hourglass, src, dst, mnt, peers, results)
            except (SystemExit, RuntimeError, subprocess.CalledProcessError) as error:
                # The local figures of the same run are still worth writing.
                results.notes.append(f"The object-store section failed: {error}")
                print(f"  object-store section failed: {error}")
            from bench import agent

            try:
                agent.agent_section(hourglass, results)
            except (SystemExit, RuntimeError, subprocess.CalledProcessError) as error:
                results.notes.append(f"The agent section failed: {error}")
                print(f"  agent section failed: {error}")
            from bench import lab

            try:
                lab.lab_section(hourglass, results)
            except (SystemExit, RuntimeError, subprocess.CalledProcessError) as error:
                results.notes.append(f"The lab section failed: {error}")
                print(f"  lab section failed: {error}")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
        subprocess.run(["losetup", "-d", src, dst], capture_output=True)
        # Disk images and repositories: about 9 GB a run that would stay until the next
        # one (a test run after it once filled the disk). The results are in memory.
        for item in WORK.iterdir():
            if item.is_dir() and not item.is_mount():
                shutil.rmtree(item, ignore_errors=True)
            elif item.suffix == ".img":
                item.unlink()
    if args.only == "s3":
        write_s3_results(results)
    elif args.only == "agent":
        from bench import agent

        agent.write_agent_results(results)
    else:
        write_results(results)
    return 0


def hourglass_command() -> str:
    """The project's `hourglass` (its .venv, made by `make install`), else the one beside
    this Python (a git worktree run with another checkout's venv)."""
    own = ROOT / ".venv" / "bin" / "hourglass"
    return str(own if own.exists() else Path(sys.executable).parent / "hourglass")


def local_sections(
    hourglass: str,
    src: str,
    dst: str,
    mnt: Path,
    env: dict[str, str],
    copied: int,
    peers: bool,
    results: Results,
) -> None:
    """Everything on local disks: the three compared steps, then Hourglass alone."""
    repos = {name: WORK / name for name in ("hourglass", "partclone", "restic", "borg")}
    tools = ["hourglass", *(["partclone", "restic", "borg"] if peers else [])]
    for name in tools:
        init_repo(name, repos[name], hourglass, env)
    backup = {
        "hourglass": f"{hourglass} backup --repo {repos['hourglass']} {src} --progress none",
        # What Clonezilla runs; partclone's progress thread adds its 2 s refresh at the end.
        "partclone": f"partclone.ext4 -c -s {src} -o - 2>/dev/null | zstd -T0 -3 -q -f -o {repos['partclone']}/1.zst",
        "restic": f"restic backup -q --repo {repos['restic']} --stdin --stdin-filename part.img < {src}",
        "borg": f"borg create --read-special --compression zstd,3 {repos['borg']}::{{now}} {src}",
    }
    label = {
        "hourglass": "hourglass",
        "partclone": "partclone+zstd",
        "restic": "restic",
        "borg": "borg",
    }

    def record(run: Run, repo: Path) -> None:
        run.stored = du(repo)
        results.runs.append(run)

    print(f"First backup (each {REPEATS} times into an empty repository):")
    for name in tools:
        fresh = partial(init_repo, name, repos[name], hourglass, env)
        step = partial(timed, label[name], "backup", backup[name], env)
        record(repeated(step, fresh), repos[name])
    if peers:
        # The same pipeline without partclone's end-of-run wait, for reference.
        quick = backup["partclone"].replace("-c -s", "-c --UI-fresh 0 -s")
        results.runs.append(repeated(partial(timed, "partclone+zstd (-f 0)", "backup", quick)))

    before_blocks = block_digests(src)
    sh("mount", src, mnt)
    changed = change_one_percent(mnt)
    sh("umount", mnt)
    results.extra["changed_bytes"] = changed
    # What changed on the partition: the files' new bytes plus the filesystem's own
    # (inode tables, bitmaps, directories, journal), 4 KiB blocks that differ.
    drop_caches()  # no page of the device read before the change may answer now
    after_blocks = block_digests(src)
    results.extra["changed_partition_bytes"] = 4096 * sum(
        1 for x, y in zip(before_blocks, after_blocks, strict=True) if x != y
    )
    incremental_tools = [t for t in tools if t != "partclone"]
    print(f"Changed {changed / MiB:.1f} MiB of files; incremental backup ({REPEATS} times):")
    before = {name: du(repos[name]) for name in incremental_tools}
    for name in incremental_tools:
        saved = keep_state(name, repos[name])
        step = partial(timed, label[name], "incremental", backup[name], env)
        record(repeated(step, partial(restore_state, saved)), repos[name])
        drop_state(saved)
    for run in results.runs:
        if run.step == "incremental" and run.stored is not None:
            run.note += f"; grew {(run.stored - before[run.tool]) / MiB:.1f} MiB"
            results.extra[f"{run.tool}_incremental_growth"] = run.stored - before[run.tool]

    print(f"Restore to a second loop device ({REPEATS} times):")
    restore = {
        "hourglass": f"{hourglass} restore --repo {repos['hourglass']} latest {dst} --yes --progress none",
        "partclone": f"zstd -d -c -q {repos['partclone']}/1.zst | partclone.ext4 -r -s - -o {dst} 2>/dev/null",
        "restic": f"restic dump -q --repo {repos['restic']} latest part.img > {dst}",
        "borg": f"borg extract --stdout {repos['borg']}::$(borg list --last 1 --short {repos['borg']}) > {dst}",
    }
    for name in tools:
        step = partial(timed, label[name], "restore", restore[name], env, durable=True)
        results.runs.append(repeated(step))
        if name == "hourglass":
            command = restore[name] + " --no-verify"
            step = partial(timed, "hourglass", "restore-noverify", command, env, durable=True)
            results.runs.append(repeated(step))
    sh("e2fsck", "-fn", dst)

    print("Hourglass alone:")
    sparse = WORK / "sparse.img"
    with open(sparse, "wb") as f:
        f.truncate(2 * 1024 * GiB)
        f.seek(1000 * GiB)
        f.write(os.urandom(64 * MiB))
    sparse_repo = WORK / "sparse-repo"
    sh(hourglass, "init", sparse_repo, "--encryption", "none")
    run = timed(
        "hourglass",
        "2TiB-sparse",
        f"{hourglass} backup --repo {sparse_repo} {sparse} --progress none",
        env,
    )
    results.extra["sparse_2tib_rss_mb"] = run.rss_kb / 1024
    results.extra["sparse_2tib_seconds"] = run.seconds
    restore_seconds = results.get("hourglass", "restore").seconds  # type: ignore[union-attr]
    results.extra["full_restore_MBps"] = copied / restore_seconds / 1e6
    extra_hourglass(hourglass, repos["hourglass"], env, results)
    more_snapshots(hourglass, repos["hourglass"], src, mnt, env, results)
    app_start(hourglass, results)


def extra_hourglass(hourglass: str, repo: Path, env: dict[str, str], results: Results) -> None:
    """File-level figures, when this build has `hourglass files`."""
    if "files" not in sh(hourglass, "--help").stdout:
        print("  (hourglass files is not available: skipping file-level figures)")
        return
    run = timed("hourglass", "first-listing", f"{hourglass} files ls --repo {repo} latest /", env)
    results.extra["first_listing_seconds"] = run.seconds
    out = WORK / "one-file"
    run = timed(
        "hourglass",
        "one-file-restore",
        f"{hourglass} files restore --repo {repo} latest /{BIG_FILE} --to {out}",
        env,
        durable=True,
    )
    size = (out / BIG_FILE).stat().st_size
    results.extra["one_file_restore_MBps"] = size / run.seconds / 1e6
    shutil.rmtree(out)


APP_START_RUNS = 5


def app_start(hourglass: str, results: Results) -> None:
    """Seconds from starting `hourglass ui` in a terminal (tmux, 100x30) until its home
    screen is drawn, median of APP_START_RUNS: the test only checks that it starts and draws,
    since a time limit there fails on a loaded machine (2.13 s once against 2.0)."""
    if shutil.which("tmux") is None:
        print("  (tmux not found: skipping the app start time)")
        return
    seconds = sorted(app_start_once(hourglass) for _ in range(APP_START_RUNS))
    results.extra["app_start_seconds"] = seconds[len(seconds) // 2]
    print(
        f"  app start: {seconds[len(seconds) // 2]:.2f} s ({seconds[0]:.2f} to {seconds[-1]:.2f})"
    )


def app_start_once(hourglass: str, timeout: float = 30) -> float:
    """One start of the app in a tmux server of its own, looking at no disk of this machine."""
    socket = f"hourglass-bench-{secrets.token_hex(4)}"  # a new server each run: no race
    disks = WORK / "app-no-disks"
    disks.mkdir(exist_ok=True)
    tmux = ["tmux", "-L", socket]
    env = {"TERM": "xterm-256color", "HOURGLASS_DISKS": str(disks), "LANG": "en_US.UTF-8"}
    started = time.monotonic()
    try:
        sh(
            *tmux, "new-session", "-d", "-s", "ui", "-x", "100", "-y", "30",
            *[arg for name, value in env.items() for arg in ("-e", f"{name}={value}")],
            f"{hourglass} ui",
        )  # fmt: skip
        while "Power off" not in sh(*tmux, "capture-pane", "-p", "-t", "ui").stdout:
            if time.monotonic() - started > timeout:
                raise SystemExit(f"hourglass ui drew no home screen in {timeout:.0f} s")
            time.sleep(0.02)
        return time.monotonic() - started
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


def more_snapshots(
    hourglass: str, repo: Path, src: str, mnt: Path, env: dict[str, str], results: Results
) -> None:
    """Take Hourglass snapshots until there are VERSIONS_SNAPSHOTS, each with a new version
    of TRACKED and 0.1% of the files changed, then time `files versions` over all of them."""
    have = 2
    for n in range(have, VERSIONS_SNAPSHOTS):
        sh("mount", src, mnt)
        (mnt / TRACKED).write_text(f"version {n}\n")
        change_one_percent(mnt, fraction=0.001, seed=n)
        sh("umount", mnt)
        sh(
            hourglass,
            "backup",
            "--repo",
            repo,
            src,
            "--progress",
            "none",
            env={**os.environ, **env},
        )
    command = f"{hourglass} files versions --repo {repo} /{TRACKED} --json > {WORK}/versions.json"
    run = timed("hourglass", "versions", command, env)
    found = json.loads((WORK / "versions.json").read_text())
    results.extra["versions_snapshots"] = VERSIONS_SNAPSHOTS
    results.extra["versions_found"] = len(found)
    results.extra["versions_seconds"] = run.seconds


# --- The object store: Hourglass and restic writing to the same private radosgw -------------

S3_SCRIPT = ROOT / "tests" / "s3server.sh"  # the suite's own start script
S3_STORE = "bluestore"  # the OSD's store: BlueStore on a sparse 10 GiB file (not memstore)
S3_CHANGE_SEED = 7  # the object-store incremental's own 1 % change


@dataclass(frozen=True)
class Radosgw:
    """A private Ceph radosgw (one mon, one OSD) started by tests/s3server.sh."""

    endpoint: str
    access_key: str
    secret_key: str
    state: Path

    def env(self) -> dict[str, str]:
        """Credentials for both tools, from the environment (never a command line)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def counters(self) -> dict[str, int]:
        """radosgw's own request counters (perf dump, through its admin socket): every
        request it served, of any client, so the same count for both tools."""
        out = sh("ceph", "--admin-daemon", self.state / "run" / "client.rgw.a.asok", "perf", "dump")
        rgw = json.loads(out.stdout)["rgw"]
        return {
            "requests": rgw["req"],
            "GET": rgw["get"],
            "PUT": rgw["put"],
            "failed": rgw["failed_req"],
        }

    def bucket(self, name: str) -> tuple[int, int]:
        """Bytes and objects in bucket ``name`` (radosgw-admin reads RADOS, not the gateway:
        no request is counted)."""
        out = sh(
            "radosgw-admin", "-c", self.state / "ceph.conf", "bucket", "stats", "--bucket", name
        )
        usage = json.loads(out.stdout).get("usage", {}).get("rgw.main", {})
        return int(usage.get("size", 0)), int(usage.get("num_objects", 0))


@contextmanager
def radosgw(state: Path) -> Iterator[Radosgw]:
    """Start a fresh radosgw keeping its state (and its BlueStore file) in ``state``; stop
    it at the end, even when the start failed halfway."""
    port = free_port()
    env = {
        **os.environ,
        "S3_DIR": str(state),
        "S3_PORT": str(port),
        "CEPH_MON_PORT": str(port + 1),
        "CEPH_STORE": S3_STORE,
    }
    try:
        out = subprocess.run(
            [str(S3_SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600
        )
        if out.returncode != 0:
            raise RuntimeError(f"tests/s3server.sh start failed:\n{out.stderr[-3000:]}")
        found = dict(
            line.removeprefix("export ").split("=", 1)
            for line in out.stdout.splitlines()
            if line.startswith("export ")
        )
        yield Radosgw(found["S3_ENDPOINT"], found["S3_ACCESS_KEY"], found["S3_SECRET_KEY"], state)
    finally:
        subprocess.run([str(S3_SCRIPT), "stop"], env=env, capture_output=True, timeout=120)


def counted(gateway: Radosgw, make: Callable[[], Run]) -> Run:
    """``make``'s run with the requests the gateway served meanwhile."""
    before = gateway.counters()
    load = os.getloadavg()[0]
    run = make()
    run.load = load
    after = gateway.counters()
    run.requests = {key: after[key] - before[key] for key in after}
    return run


def object_store_section(
    hourglass: str, src: str, dst: str, mnt: Path, peers: bool, results: Results
) -> None:
    """First backup, incremental (after another 1 % changed), restore and the structure
    check, by Hourglass and restic into buckets of one private radosgw. Each first backup
    goes into a bucket of its own (REPEATS buckets per tool) and each incremental into one
    of those, so no bucket is copied back between runs."""
    tools = ["hourglass", *(["restic"] if peers else [])]
    passfile = WORK / "s3-passphrase"
    passfile.write_text(PASSPHRASE)
    passfile.chmod(0o600)
    load = os.getloadavg()
    results.machine["s3_load_before"] = " ".join(f"{x:.2f}" for x in load)
    print(f"Object store (radosgw, {S3_STORE}; load average {load[0]:.2f}):")
    with radosgw(WORK / "s3") as gateway:
        version = sh("radosgw", "--version").stdout.split("(")[0].strip()
        results.machine["s3_server"] = (
            f"{version} radosgw, one mon and one OSD ({S3_STORE} on a sparse 10 GiB file), "
            "on 127.0.0.1"
        )
        env = {**gateway.env(), "RESTIC_PASSWORD_FILE": str(passfile),
               "RESTIC_CACHE_DIR": str(WORK / "restic-s3-cache")}  # fmt: skip
        ep = gateway.endpoint
        hg = f"--s3-endpoint {ep} --passphrase-file {passfile}"

        def repo(tool: str, bucket: str) -> str:
            return f"--repo s3://{bucket} {hg}" if tool == "hourglass" else f"-r s3:{ep}/{bucket}"

        buckets = {tool: [f"bench-{tool}-{i}" for i in range(REPEATS)] for tool in tools}
        backup = {
            "hourglass": f"{hourglass} backup {{repo}} {src} --progress none",
            "restic": f"restic backup -q {{repo}} --stdin --stdin-filename part.img < {src}",
        }
        data = results.extra["data_bytes"]

        def per_gib(run: Run, new_bytes: float) -> None:
            if run.requests:
                run.note = (
                    f"{run.note}; " if run.note else ""
                ) + f"{run.requests['requests'] / (new_bytes / GiB):.1f} requests/GiB"

        print(f"  first backup ({REPEATS} times, each into a new bucket):")
        for tool in tools:
            runs = []
            for bucket in buckets[tool]:
                if tool == "hourglass":
                    sh(hourglass, "init", f"s3://{bucket}", *hg.split(), env={**os.environ, **env})
                else:
                    sh("restic", "init", "-r", f"s3:{ep}/{bucket}", env={**os.environ, **env})
                command = backup[tool].format(repo=repo(tool, bucket))
                run = counted(gateway, partial(timed, tool, "s3 backup", command, env))
                run.stored = gateway.bucket(bucket)[0]
                runs.append(run)
            results.runs.append(median := median_of(runs))
            per_gib(median, data)

        sh("mount", src, mnt)
        changed = change_one_percent(mnt, seed=S3_CHANGE_SEED)
        sh("umount", mnt)
        results.extra["s3_changed_bytes"] = changed
        print(f"  changed {changed / MiB:.1f} MiB of files; incremental ({REPEATS} buckets):")
        for tool in tools:
            runs = []
            for bucket in buckets[tool]:
                before = gateway.bucket(bucket)[0]
                command = backup[tool].format(repo=repo(tool, bucket))
                run = counted(gateway, partial(timed, tool, "s3 incremental", command, env))
                run.stored = gateway.bucket(bucket)[0]
                run.note = f"grew {(run.stored - before) / MiB:.1f} MiB"
                runs.append(run)
            results.runs.append(median := median_of(runs))
            per_gib(median, changed)

        print(f"  restore to a second loop device ({REPEATS} times):")
        restore = {
            "hourglass": f"{hourglass} restore {{repo}} latest {dst} --yes --progress none",
            "restic": f"restic dump -q {{repo}} latest part.img > {dst}",
        }
        check = {  # both without --read-data; Hourglass's needs no key
            "hourglass": f"{hourglass} check --repo s3://{{bucket}} --s3-endpoint {ep} "
            "--progress none",
            "restic": "restic check -q {repo}",
        }
        for tool in tools:
            command = restore[tool].format(repo=repo(tool, buckets[tool][0]))
            step = partial(timed, tool, "s3 restore", command, env, durable=True)
            results.runs.append(repeated(partial(counted, gateway, step)))
        sh("e2fsck", "-fn", dst)
        print(f"  check, no --read-data ({REPEATS} times; then Hourglass's verify):")
        for tool in tools:
            bucket = buckets[tool][0]
            command = check[tool].format(repo=repo(tool, bucket), bucket=bucket)
            step = partial(timed, tool, "s3 check", command, env)
            results.runs.append(repeated(partial(counted, gateway, step)))
        # `hourglass verify` (with the key, no --read-data) checks each snapshot's chunks.
        command = f"{hourglass} verify {repo('hourglass', buckets['hourglass'][0])} --progress none"
        step = partial(timed, "hourglass", "s3 verify", command, env)
        results.runs.append(repeated(partial(counted, gateway, step)))
        objects = {tool: gateway.bucket(buckets[tool][0]) for tool in tools}
        for tool, (size, count) in objects.items():
            results.extra[f"s3_{tool}_bucket_bytes"] = size
            results.extra[f"s3_{tool}_bucket_objects"] = count
    for tool in tools:
        run = results.get(tool, "s3 backup")
        if run and run.requests:
            results.extra[f"s3_{tool}_requests_per_GiB"] = run.requests["requests"] / (data / GiB)
    load = os.getloadavg()
    results.machine["s3_load_after"] = " ".join(f"{x:.2f}" for x in load)


def s3_lines(results: Results) -> list[str]:
    """The object-store section of results.md."""
    runs = [r for r in results.runs if r.step.startswith("s3 ")]
    if not runs and not results.notes:
        return []

    def shown(r: Run) -> str:
        q = r.requests or {}
        other = q.get("requests", 0) - q.get("GET", 0) - q.get("PUT", 0)
        return f"{q.get('requests', '')} | {q.get('GET', '')} | {q.get('PUT', '')} | {other if q else ''}"

    lines = [
        "## Object store (radosgw)",
        "",
        f"Server: {results.machine.get('s3_server', '?')}. Hourglass `--repo s3://BUCKET`, restic "
        "`-r s3:http://...` (its defaults), credentials from the environment, passphrases from "
        "a file. Requests are counted by radosgw (its perf counters), the same counter for both. "
        f"Load average (1, 5, 15 min) before {results.machine.get('s3_load_before', '?')}, after "
        f"{results.machine.get('s3_load_after', '?')} (a shared machine).",
        "",
        *([f"- {note}" for note in results.notes] + [""] if results.notes else []),
        "| tool | step | seconds | peak RSS MB | requests | GET | PUT | other | bucket bytes "
        "| load | note |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        *[
            f"| {r.tool} | {r.step} | {r.seconds:.2f} | {r.rss_kb / 1024:.0f} | {shown(r)} | "
            f"{r.stored if r.stored is not None else ''} | "
            f"{f'{r.load:.1f}' if r.load is not None else ''} | {r.note} |"
            for r in runs
        ],
        "",
        "| step | how many times faster Hourglass is than restic |",
        "|---|---:|",
        *[
            f"| {step} | {ratio(results, 's3 ' + step, 'restic')} |"
            for step in ("backup", "incremental", "restore", "check")
        ],
        "",
    ]
    return lines


def write_s3_results(results: Results) -> None:
    """`--only s3`: the section alone, in bench/work (bench/results.md is the whole run's)."""
    (WORK / "results-s3.json").write_text(json.dumps(asdict(results), indent=1))
    lines = [
        "# Benchmark results: the object-store section alone",
        "",
        f"Machine: {results.machine.get('cpu')}, {results.machine.get('cores')} cores; run "
        f"{results.machine.get('date')}. Data: {results.extra.get('data_bytes', 0) / GiB:.2f} "
        "GiB of files from /usr on a 3 GiB ext4 loop device; page cache dropped before every "
        "measurement.",
        "",
        *s3_lines(results),
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {w} | {m} | {ok} |" for w, m, ok in targets(results) if w.startswith("object store")],
        "",
    ]
    (WORK / "results-s3.md").write_text("\n".join(lines))
    print(f"Wrote {WORK / 'results-s3.md'}")


def ratio(results: Results, step: str, peer: str) -> str:
    ours, theirs = results.get("hourglass", step), results.get(peer, step)
    if not ours or not theirs:
        return "-"
    return f"{theirs.seconds / ours.seconds:.2f}x"


def write_results(results: Results) -> None:
    (HERE / "results.json").write_text(json.dumps(asdict(results), indent=1))
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {results.machine.get('cpu')}, {results.machine.get('cores')} cores, kernel "
        f"{results.machine.get('kernel')}; run {results.machine.get('date')}. "
        f"Data: {results.extra.get('data_bytes', 0) / GiB:.2f} GiB of files from /usr on a "
        "3 GiB ext4 loop device; page cache dropped before every measurement.",
        "",
        "## Limits",
        "",
        "| what | value |",
        "|---|---|",
        *[f"| {k} | {v:.1f} |" for k, v in results.limits.items()],
        "",
        "## Runs",
        "",
        "| tool | step | seconds | peak RSS MB | repository bytes | note |",
        "|---|---|---:|---:|---:|---|",
        *[
            f"| {r.tool} | {r.step} | {r.seconds:.2f} | {r.rss_kb / 1024:.0f} | "
            f"{r.stored if r.stored is not None else ''} | {r.note} |"
            for r in results.runs
        ],
        "",
        "## Ratios (how many times faster Hourglass is; > 1 is better)",
        "",
        "| step | vs partclone+zstd | vs restic | vs Borg |",
        "|---|---:|---:|---:|",
        *[
            f"| {step} | {ratio(results, step, 'partclone+zstd')} | {ratio(results, step, 'restic')} | "
            f"{ratio(results, step, 'borg')} |"
            for step in ("backup", "incremental", "restore")
        ],
        "",
        "## Hourglass alone",
        "",
        *[
            f"- {k}: {v:.2f}" if isinstance(v, float) else f"- {k}: {v}"
            for k, v in results.extra.items()
        ],
        "",
    ]
    ours = results.get("hourglass", "backup")
    pc = results.get("partclone+zstd", "backup")
    if ours and pc and ours.stored and pc.stored:
        lines.insert(-1, f"- stored size vs partclone+zstd: {ours.stored / pc.stored:.3f}x")
    quick = results.get("partclone+zstd (-f 0)", "backup")
    if ours and quick:
        lines.insert(
            -1,
            f"- first backup vs partclone+zstd without partclone's end-of-run wait "
            f"(`--UI-fresh 0`): {quick.seconds / ours.seconds:.2f}x",
        )
    from bench import agent

    lines += s3_lines(results)
    lines += agent.agent_lines(results)
    from bench import lab

    lines += lab.lab_lines(results)
    lines += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {what} | {measured} | {met} |" for what, measured, met in targets(results)]
    lines += [f"| {w} | {m} | {ok} |" for w, m, ok in agent.agent_targets(results)]
    lines += [f"| {w} | {m} | {ok} |" for w, m, ok in lab.lab_targets(results)]
    lines.append("")
    (HERE / "results.md").write_text("\n".join(lines))
    chart(results)
    print(f"Wrote {HERE / 'results.md'}")


def targets(results: Results) -> list[tuple[str, str, str]]:
    """Each target of the benchmark issue, what this run measured, and whether it is met."""
    rows: list[tuple[str, str, str]] = []

    def faster(step: str, peer: str) -> float | None:
        ours, theirs = results.get("hourglass", step), results.get(peer, step)
        return theirs.seconds / ours.seconds if ours and theirs else None

    def row(what: str, value: float | None, shown: str, ok: bool) -> None:
        rows.append(
            (
                what,
                shown if value is not None else "not measured",
                "yes" if value is not None and ok else "no",
            )
        )

    x = faster("backup", "partclone+zstd")
    row("first backup ≥ 2x faster than partclone+zstd", x, f"{x or 0:.2f}x", (x or 0) >= 2)
    ours, pc = results.get("hourglass", "backup"), results.get("partclone+zstd", "backup")
    size = ours.stored / pc.stored if ours and pc and ours.stored and pc.stored else None
    row(
        "first backup stores ≤ 1.05x partclone+zstd", size, f"{size or 0:.3f}x", (size or 9) <= 1.05
    )
    x = faster("incremental", "borg")
    row("incremental ≥ 3x faster than Borg", x, f"{x or 0:.2f}x", (x or 0) >= 3)
    grew, changed = (
        results.extra.get("hourglass_incremental_growth"),
        results.extra.get("changed_bytes"),
    )
    g = grew / changed if grew is not None and changed else None
    row(
        "incremental stores ≤ 1.5x the changed bytes (of files)",
        g,
        f"{g or 0:.2f}x",
        (g or 9) <= 1.5,
    )
    on_disk = results.extra.get("changed_partition_bytes")
    p = grew / on_disk if grew is not None and on_disk else None
    row("the same against the bytes changed on the partition", p, f"{p or 0:.2f}x", (p or 9) <= 1.5)
    x = faster("restore", "borg")
    row("restore ≥ 2.5x faster than borg extract", x, f"{x or 0:.2f}x", (x or 0) >= 2.5)
    rss = results.extra.get("sparse_2tib_rss_mb")
    row("peak RSS ≤ 250 MB on a 2 TiB source", rss, f"{rss or 0:.0f} MB", (rss or 9999) <= 250)
    t = results.extra.get("first_listing_seconds")
    row(
        "first listing of a snapshot's root < 2 s (cold cache)", t, f"{t or 0:.2f} s", (t or 99) < 2
    )
    one, full = results.extra.get("one_file_restore_MBps"), results.extra.get("full_restore_MBps")
    f = one / full if one and full else None
    row(
        "one 512 MiB file restores at ≥ 0.5x full-restore throughput",
        f,
        f"{f or 0:.2f}x",
        (f or 0) >= 0.5,
    )
    t = results.extra.get("app_start_seconds")
    row("the app draws its home screen < 2 s (tmux)", t, f"{t or 0:.2f} s", (t or 99) < 2)
    t = results.extra.get("versions_seconds")
    row(
        f"`files versions` over {VERSIONS_SNAPSHOTS} snapshots < 10 s",
        t,
        f"{t or 0:.2f} s",
        (t or 99) < 10,
    )
    for step in ("backup", "incremental", "restore"):
        x = faster(f"s3 {step}", "restic")
        row(f"object store: {step} ≥ 2x faster than restic", x, f"{x or 0:.2f}x", (x or 0) >= 2)
    t = (r := results.get("hourglass", "s3 check")) and r.seconds
    size = results.extra.get("s3_hourglass_bucket_bytes", 0) / GiB
    row(
        f"object store: `check` without --read-data < 10 s (of a {size:.1f} GiB repository; "
        "the issue's is 10 GiB)",
        t or None,
        f"{t or 0:.2f} s",
        (t or 99) < 10,
    )
    n = results.extra.get("s3_hourglass_requests_per_GiB")
    row(
        "object store: ≤ 64 requests per GiB of new data (first backup)",
        n,
        f"{n or 0:.1f}",
        (n or 999) <= 64,
    )
    return rows


def chart(results: Results) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart (pip install '.[bench]')")
        return
    steps = ["backup", "incremental", "restore"]
    tools = ["hourglass", "partclone+zstd", "restic", "borg"]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.2
    for i, tool in enumerate(tools):
        values = [(r.seconds if (r := results.get(tool, s)) else 0) for s in steps]
        ax.bar([x + i * width for x in range(len(steps))], values, width, label=tool)
    ax.set_xticks([x + 1.5 * width for x in range(len(steps))], steps)
    ax.set_ylabel("seconds (lower is better)")
    ax.set_title("3 GiB ext4 partition, 2 GiB of files")
    ax.legend()
    fig.tight_layout()
    fig.savefig(HERE / "results.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
