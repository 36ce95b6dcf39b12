"""Quick disk measurements (not the formal benchmark): run as root with
``.venv/bin/python -m tests.imaging.disks.quick_measure [WORKDIR]``.

1. backup and restore throughput of a whole test disk (GPT: ESP, a half-full ext4 that also
   held deleted data, xfs, and a raw partition of random bytes standing in for LUKS);
2. what partclone's used-block map saves against raw on the half-empty ext4;
3. restoring that ext4 partition: Hourglass against ``partclone.ext4 -r`` from its own image.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from imaging.image.backup import plan_file, run_backup
from imaging.image.plan import plan_for
from imaging.repository.store import Repository
from tests.imaging.disks import helpers
from tests.support import MiB, sh

LAYOUT = [  # number, fstype, MiB, type code
    (1, "vfat", 128, "ef00"),
    (2, "ext4", 1024, "8300"),
    (3, "xfs", 600, "8300"),
    (4, "", 256, "8309"),
]
DISK_MIB = 1 + sum(p[2] for p in LAYOUT) + 2


def write_data(root: Path, total: int, seed: int) -> None:
    """Files of 256 KiB .. 4 MiB: half random bytes, half text (compressible)."""
    rng = random.Random(seed)
    text = Path("/usr/lib/python3.11/argparse.py").read_bytes()
    written, i = 0, 0
    while written < total:
        size = rng.randint(256 * 1024, 4 * MiB)
        data = rng.randbytes(size) if i % 2 else (text * (size // len(text) + 1))[:size]
        path = root / f"d{i % 13}" / f"f{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += size
        i += 1


def timed(argv: list[str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True)
    return time.monotonic() - started


def main(work: Path) -> None:
    hourglass = [sys.executable, "-m", "imaging.cli.main"]
    results: dict[str, object] = {}
    image = work / "source.img"
    sh("truncate", "-s", f"{DISK_MIB}M", image)
    argv = ["sgdisk", "--clear"]
    for number, _, mib, code in LAYOUT:
        argv += [f"--new={number}:0:+{mib}M", f"--typecode={number}:{code}"]
    sh(*argv, image)
    with helpers.attached(image) as disk:
        for number, fstype, _, _ in LAYOUT:
            dev = helpers.node(disk, number)
            if not fstype:
                with open(dev, "wb") as f:
                    for _ in range(256):
                        f.write(os.urandom(MiB))
                continue
            helpers.make_fs(dev, fstype, f"P{number}")
            if fstype == "vfat":
                continue
            with helpers.mounted_fs(dev, fstype, work / f"m{number}") as root:
                if fstype == "ext4":  # data written and deleted: raw would read it all
                    write_data(root / "deleted", 400 * MiB, 7)
                    sh("sync")
                    sh("rm", "-rf", str(root / "deleted"))
                write_data(root, 512 * MiB if fstype == "ext4" else 200 * MiB, number)
        sh("sync")
        env = {**os.environ, "HOURGLASS_PASSPHRASE": "measure"}
        repo_path = work / "repo"
        subprocess.run(
            [*hourglass, "init", str(repo_path)], check=True, env=env, capture_output=True
        )
        started = time.monotonic()
        subprocess.run(
            [*hourglass, "backup", "--repo", str(repo_path), disk],
            check=True,
            env=env,
            capture_output=True,
        )
        backup_s = time.monotonic() - started
        repo = Repository.open(repo_path, "measure")
        snap = repo.snapshots()[-1]
        stats = snap.manifest["stats"]
        results["disk_size_MB"] = DISK_MIB * MiB / 1e6
        results["disk_backup"] = {
            "seconds": round(backup_s, 2),
            "read_MB": round(stats["read"] / 1e6, 1),
            "read_MB_per_s": round(stats["read"] / 1e6 / backup_s, 1),
            "disk_MB_per_s": round(DISK_MIB * MiB / 1e6 / backup_s, 1),
            "stored_MB": round(stats["stored"] / 1e6, 1),
        }
        target_image = work / "target.img"
        helpers.garbage_file(target_image, DISK_MIB * MiB)
        with helpers.attached(target_image) as target:
            for verify in (False, True):
                argv = [
                    *hourglass,
                    "restore",
                    "--repo",
                    str(repo_path),
                    "latest",
                    target,
                    "--yes",
                ] + ([] if verify else ["--no-verify"])
                seconds = timed_env(argv, env)
                written = sum(i.size if i.used is None else i.used for i in snap.images)
                results[f"disk_restore{'_verified' if verify else ''}"] = {
                    "seconds": round(seconds, 2),
                    "data_MB_per_s": round(written / 1e6 / seconds, 1),
                    "disk_MB_per_s": round(DISK_MIB * MiB / 1e6 / seconds, 1),
                }
        # partclone's map against raw on the half-empty ext4
        ext4 = helpers.node(disk, 2)
        plain = Repository.init(work / "plain", encryption="none")
        mapped = run_backup(plain, plan_for([ext4]))
        raw = run_backup(Repository.init(work / "raw", encryption="none"), plan_file(ext4))
        results["ext4_map_vs_raw"] = {
            side: {
                "read_MB": round(s.manifest["stats"]["read"] / 1e6, 1),
                "stored_MB": round(s.manifest["stats"]["stored"] / 1e6, 1),
                "seconds": s.manifest["stats"]["elapsed"],
            }
            for side, s in (("partclone_map", mapped), ("raw", raw))
        }
        # restore of that partition: partclone -r from its image against Hourglass
        pcl = work / "ext4.pcl"
        sh("partclone.ext4", "-c", "-q", "-s", ext4, "-o", pcl)
        part_target = work / "part-target.img"
        helpers.garbage_file(part_target, 1024 * MiB)
        with helpers.attached(part_target) as pt:
            results["ext4_restore"] = {
                "partclone_-r_seconds": round(
                    timed(["partclone.ext4", "-r", "-q", "-s", str(pcl), "-o", pt]), 2
                ),
                "hourglass_seconds": round(
                    timed_env(
                        [
                            *hourglass,
                            "restore",
                            "--repo",
                            str(work / "plain"),
                            "latest",
                            pt,
                            "--yes",
                            "--no-verify",
                        ],
                        env,
                    ),
                    2,
                ),
                "hourglass_verified_seconds": round(
                    timed_env(
                        [
                            *hourglass,
                            "restore",
                            "--repo",
                            str(work / "plain"),
                            "latest",
                            pt,
                            "--yes",
                        ],
                        env,
                    ),
                    2,
                ),
                "used_MB": round((mapped.images[0].used or 0) / 1e6, 1),
            }
            assert helpers.fsck(pt, "ext4").returncode == 0
    print(json.dumps(results, indent=1))


def timed_env(argv: list[str], env: dict[str, str]) -> float:
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, env=env)
    return time.monotonic() - started


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(Path(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory(prefix="hourglass-measure-") as tmp:
            main(Path(tmp))
