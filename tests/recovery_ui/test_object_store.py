"""A repository in an object store (S3) through the app: the Share screen's "Object store
(S3)" reaches a bucket of the suite's own radosgw with keys typed in, a wrong secret is a
clear error there, a new repository is made in the bucket and a partition of a real disk is
backed up into it; Home lists the snapshot. The keys go nowhere else: not into the
environment (children inherit it), not into the session log."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Input, SelectionList

from imaging.jobs.locations import ObjectStore, connect_object_store
from imaging.repository.store import Repository
from recovery_ui import i18n
from recovery_ui.app import HourglassApp
from recovery_ui.text import when
from tests.recovery_ui.conftest import Source, screen_text, settle, shot
from tests.recovery_ui.flows import choose_option, highlight_option, type_text
from tests.s3server import S3Server

PREFIX = "pc1"
NEW_STRINGS = {
    "Object store (S3)": "对象存储（S3）",
    "Secret key": "秘密密钥",
    "The object store could not be used.": "无法使用对象存储。",
    "A network share (SMB, NFS, SSH) or an object store (S3)...": (
        "网络共享（SMB、NFS、SSH）或对象存储（S3）……"
    ),
}


def test_the_object_store_strings_are_translated() -> None:
    try:
        i18n.set_language("zh_CN")
        for english, chinese in NEW_STRINGS.items():
            assert i18n._(english) == chinese
    finally:
        i18n.set_language("en")


async def fill_in(pilot: Pilot[Any], values: dict[str, str]) -> None:
    for field, value in values.items():
        pilot.app.screen.query_one(f"#{field}", Input).value = ""
        await pilot.click(f"#{field}")
        await type_text(pilot, value)


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.s3
async def test_back_up_a_partition_into_a_new_repository_in_a_bucket(
    make_app: Callable[..., HourglassApp],
    source: Source,
    s3_server: S3Server,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only what the person types reaches the store: no keys or endpoint in the environment.
    for name in s3_server.env():
        monkeypatch.delenv(name)
    secret = s3_server.secret_key
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await pilot.press("1")
        await settle(pilot)
        await highlight_option(pilot, "disks", source.device)
        parts: SelectionList[int] = app.screen.query_one("#parts", SelectionList)
        parts.deselect(1)
        parts.deselect(3)
        await pilot.click("#source-next")
        await settle(pilot)
        await choose_option(pilot, "where", "share")
        await settle(pilot)
        await choose_option(pilot, "kind", "s3")
        await pilot.pause()
        screen = screen_text(app)
        assert "Bucket" in screen and "Secret key" in screen and "Server" not in screen, screen
        fields = {
            "endpoint": s3_server.endpoint,
            "bucket": s3_bucket,
            "prefix": PREFIX,
            "access": s3_server.access_key,
            "secret": "not-the-secret",
        }
        await fill_in(pilot, fields)
        assert "not-the-secret" not in screen_text(app)  # the secret is masked
        shot(app, "object-store")
        await pilot.click("#connect")
        await settle(pilot)
        error = screen_text(app)
        assert "The object store could not be used." in error, error
        assert "refused access" in error, error
        await pilot.press("escape")
        await pilot.pause()

        await fill_in(pilot, {"secret": secret})
        await pilot.click("#connect")
        await settle(pilot)
        assert "New repository" in screen_text(app), screen_text(app)
        assert f"s3://{s3_bucket}/{PREFIX}" in screen_text(app)
        await type_text(pilot, "bucket passphrase")
        await pilot.press("enter")
        await type_text(pilot, "bucket passphrase")
        await pilot.press("enter")
        await settle(pilot, timeout=60)
        summary = screen_text(app)
        assert "p2" in summary, summary
        assert "Free space" not in summary, summary  # a bucket has no free space to show
        await pilot.click("#start")
        await settle(pilot, timeout=120)
        result = screen_text(app)
        assert "The backup is complete and checked." in result, result
        assert "Room it takes in the object store, compressed:" in result, result

        place = ObjectStore(s3_server.endpoint, s3_bucket, PREFIX, s3_server.access_key)
        repo = Repository.open(
            connect_object_store(place, secret=secret).store, "bucket passphrase"
        )
        snapshots = repo.snapshots()
        assert [s.source for s in snapshots] == [f"{source.device}p2"]

        await pilot.press("escape")  # the result pane: back to Home
        await settle(pilot)
        home = screen_text(app)
        assert when(snapshots[0].time) in home, home
        assert f"s3://{s3_bucket}/{PREFIX}" in home, home

        assert not [k for k, v in os.environ.items() if secret in v], "secret in the environment"
        log = "\n".join(app.session_log.lines)
        assert f"s3://{s3_bucket}/{PREFIX}" in log  # the log is there, and names the bucket
        assert secret not in log and "not-the-secret" not in log
