"""The lab dashboard at 80x24, in both languages: a real lab server of a real snapshot on
this machine's loopback; the PCs are HTTP clients reporting as receivers do (the transport
itself, with real receivers, is tested in tests/imaging/lab/test_transport.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from imaging.lab.client import LabClient
from imaging.lab.run import LabRun
from imaging.lab.server import LabServer
from imaging.repository.store import Repository, Snapshot
from recovery_ui import i18n
from recovery_ui.console import Terminal
from recovery_ui.lab_dashboard import SUMMARY_DIR, LabDashboard
from tests.conftest import PASSPHRASE
from tests.recovery_ui.conftest import FULL, screen_text, shot

pytestmark = [pytest.mark.integration, pytest.mark.root]

DESK = "52:54:00:00:00:01"
OTHER = "52:54:00:00:00:02"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def report(client: LabClient, rid: str, mac: str, phase: str, done: int = 0, **kw: object) -> None:
    client.post_json(
        "/report", {"id": rid, "mac": mac, "phase": phase, "done": done, "total": 1000, **kw}
    )


SERIAL = Terminal("serial", False, "tests")


@pytest.mark.parametrize(
    ("language", "terminal"), [("en", FULL), ("zh_CN", FULL), ("en", SERIAL)], ids=str
)
async def test_the_dashboard_shows_pcs_starts_on_a_key_and_saves(
    template: tuple[Path, list[Snapshot]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    language: str,
    terminal: Terminal,
) -> None:
    monkeypatch.setenv("LANGUAGE", language)
    monkeypatch.setenv(SUMMARY_DIR, str(tmp_path))
    repo = Repository.open(template[0], PASSPHRASE)
    port = free_port()
    server = LabServer(repo, template[1][-1], address="127.0.0.1", http_port=port)
    session = LabRun(server, None, clients=3, names={DESK: "Desk 1"})
    session.open()
    client = LabClient(f"http://127.0.0.1:{port}")
    app = LabDashboard(session, "Serving snapshot ...", terminal=terminal)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            report(client, "a", DESK, "joined")
            report(client, "b", OTHER, "joined")
            await pilot.pause(0.7)
            text = screen_text(app)
            assert "Desk 1" in text and OTHER in text
            assert i18n._("joined") in text
            assert (
                i18n._("Waiting: {pcs} PCs joined. {rule} Press s to start now.").split("{")[0]
                in text
            )
            assert not server.started, "3 PCs are wanted, 2 joined"

            await pilot.press("s")
            await pilot.pause(0.2)
            assert server.started
            report(client, "a", DESK, "receiving", 500, rate=5e6)
            report(client, "b", OTHER, "FAILED", 100, message="the disk is too small")
            await pilot.pause(0.7)
            text = screen_text(app)
            assert "50%" in text and i18n._("receiving") in text
            assert "FAILED" in text and "the disk is too small" in text

            await pilot.press("q")  # not done: asks for a second q
            await pilot.pause(0.2)
            assert app.is_running

            report(client, "a", DESK, "OK", 1000, message="verified")
            await pilot.pause(0.7)
            assert app.done
            shot(app, f"lab-dashboard-{language}-{terminal.kind}")
            await pilot.press("w")
            await pilot.pause(0.2)
            saved = list(tmp_path.glob("hourglass-lab-*.txt"))
            assert len(saved) == 1
            summary = saved[0].read_text()
            assert "Desk 1" in summary and "OK" in summary and "FAILED" in summary
            assert "HOURGLASS-RESULT: FAILED 1 of 2 PCs restored and verified" in summary
            await pilot.press("q")
            await pilot.pause(0.2)
        assert not app.is_running
    finally:
        session.close()
        i18n.set_language(i18n.ENGLISH)
