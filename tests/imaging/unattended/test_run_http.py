"""An unattended restore from an http:// repository, as a lab serves one from any web
server: the appliance mounts it read-only with httpdirfs, where no lease can be written (the
filesystem answers ENOSYS), and restores without one."""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.repository.store import Repository
from imaging.unattended.run import RESULT, run_unattended
from tests.conftest import PASSPHRASE, WEAK_KDF
from tests.support import MiB, loop_device, run_cli, write_random_image

pytestmark = [pytest.mark.integration, pytest.mark.root]


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """A static server that answers ``Range: bytes=A-B`` (httpdirfs needs it)."""

    def log_message(self, format: str, *args: object) -> None:
        pass

    def send_head(self):  # type: ignore[no-untyped-def]
        wanted = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = self.translate_path(self.path)
        if wanted is None or not os.path.isfile(path):
            return super().send_head()
        size = os.path.getsize(path)
        start = int(wanted.group(1))
        end = min(int(wanted.group(2) or size - 1), size - 1)
        f = open(path, "rb")  # noqa: SIM115 (closed by copyfile's caller)
        f.seek(start)
        self.send_response(206)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self._left = end - start + 1
        return f

    def copyfile(self, source, outputfile):  # type: ignore[no-untyped-def]
        left = getattr(self, "_left", None)
        if left is None:
            return super().copyfile(source, outputfile)
        while left > 0:
            data = source.read(min(left, 1 << 16))
            if not data:
                break
            outputfile.write(data)
            left -= len(data)
        self._left = None
        return None


@pytest.fixture
def web(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(RangeHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_a_restore_from_an_http_repository(
    web: tuple[Path, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if shutil.which("httpdirfs") is None:
        pytest.skip("needs httpdirfs")
    from imaging.repository import keys

    monkeypatch.setattr(keys, "PASSPHRASE_KDF", WEAK_KDF)
    root, port = web
    Repository.init(root / "repo", passphrase=PASSPHRASE)
    (root / "passphrase").write_text(PASSPHRASE + "\n")
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    write_random_image(source, 8 * MiB, seed=31)
    with loop_device(source) as device:
        assert run_cli("backup", "--repo", str(root / "repo"), "--passphrase-file",
                       str(root / "passphrase"), device) == 0  # fmt: skip
    target.write_bytes(b"\xa5" * (8 * MiB))
    said: list[str] = []
    with loop_device(target) as device:
        outcome = run_unattended(
            f"hourglass.run=restore hourglass.repo=http://127.0.0.1:{port}/repo/ "
            f"hourglass.passphrase_file=http://127.0.0.1:{port}/passphrase "
            f"hourglass.target={device} hourglass.after=shell",
            say=said.append,
        )
    assert outcome.ok, f"{outcome.line}\n" + "\n".join(said)
    assert outcome.line.startswith(f"{RESULT} OK restore of "), outcome.line
    assert target.read_bytes() == source.read_bytes()
