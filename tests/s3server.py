"""The test suite's own S3 server: Ceph's radosgw from Debian 12, started by tests/s3server.sh
(one mon, one memstore OSD, beast on 127.0.0.1 at a free port). The session fixture
``s3_server`` in tests/conftest.py starts it once for the tests marked ``s3``."""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).with_name("s3server.sh")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    region: str
    started_in: float
    """Seconds from nothing to a server that answers signed requests."""
    ca_file: Path | None = None
    """The CA certificate that signed the server's own (a server started with ``tls=True``)."""
    script_env: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def kill_gateway(self) -> None:
        """SIGKILL radosgw alone: the mon and the OSD keep what was written."""
        _script("gateway-kill", self.script_env)

    def start_gateway(self) -> None:
        """Start radosgw again (same port, same data) and wait until it answers."""
        _script("gateway-start", self.script_env)

    def env(self) -> dict[str, str]:
        """What boto3 (and so `hourglass`) needs to reach this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def client(self, **kwargs: Any) -> Any:
        """A boto3 client of this server (the store's own settings: path style), with its
        keys and CA unless told otherwise."""
        from imaging.repository.s3store import S3Options, make_client

        kwargs.setdefault("ca_file", self.ca_file)
        kwargs.setdefault("access_key", self.access_key)
        kwargs.setdefault("secret_key", self.secret_key)
        return make_client(S3Options(endpoint=self.endpoint, **kwargs))


def _script(command: str, env: dict[str, str]) -> None:
    out = subprocess.run(
        [str(SCRIPT), command], env=env, capture_output=True, text=True, timeout=300
    )
    if out.returncode != 0:
        raise RuntimeError(f"tests/s3server.sh {command} failed:\n{out.stderr[-3000:]}")


def free_port(low: int = 20000, high: int = 29999) -> int:
    """A port in [low, high] nobody listens on now (and its neighbour, for the mon)."""
    for port in range(low + os.getpid() % 5000, high, 2):
        if all(_free(p) for p in (port, port + 1)):
            return port
    raise RuntimeError("no free port pair in 20000-29999")


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _log_tails(state: Path) -> str:
    """The last lines of each daemon's log: the start's own output often says nothing of
    why a daemon did not come up."""
    tails = []
    for log in sorted((state / "log").glob("*")):
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()[-8:]
            tails.append(f"--- {log.name}:\n" + "\n".join(lines))
    return "\n" + "\n".join(tails) if tails else ""


@contextmanager
def running(state: Path, *, tls: bool = False) -> Iterator[S3Server]:
    """Start a fresh server keeping its state in ``state``; stop it (by its recorded PIDs)
    at the end, even when the start failed halfway. With ``tls``, it serves https only, with
    a certificate for IP 127.0.0.1 signed by a CA of its own (``S3Server.ca_file``)."""
    port = free_port()
    env = {
        **os.environ,
        "S3_DIR": str(state),
        "S3_PORT": str(port),
        "CEPH_MON_PORT": str(port + 1),
        "CEPH_STORE": "memstore",
        "S3_TLS": "1" if tls else "0",
    }
    start = time.monotonic()
    try:
        out = subprocess.run(
            [str(SCRIPT), "start"], env=env, capture_output=True, text=True, timeout=600
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"tests/s3server.sh start failed (ports {port}, {port + 1}):\n"
                f"{out.stderr[-3000:]}{_log_tails(state)}"
            )
        found = {}
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                key, _, value = line.removeprefix("export ").partition("=")
                found[key] = shlex.split(value)[0] if value else ""
        yield S3Server(
            endpoint=found["S3_ENDPOINT"],
            access_key=found["S3_ACCESS_KEY"],
            secret_key=found["S3_SECRET_KEY"],
            region=found["S3_REGION"],
            started_in=time.monotonic() - start,
            ca_file=Path(found["S3_CA_FILE"]) if "S3_CA_FILE" in found else None,
            script_env=env,
        )
    finally:
        subprocess.run([str(SCRIPT), "stop"], env=env, capture_output=True, timeout=120)
