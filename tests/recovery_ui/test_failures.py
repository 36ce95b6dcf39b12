"""How the app words the engine's errors where the engine's hint names what only the
command line can do (issue 22, items 3, 4 and 11), in both languages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from imaging.errors import MISTYPED_HINT, NoSpace, PassphraseError, TargetTooSmall
from recovery_ui.i18n import set_language
from recovery_ui.screens.base import describe_failure


@pytest.fixture(params=["en", "zh_CN"])
def language(request: pytest.FixtureRequest) -> Iterator[str]:
    set_language(request.param)
    yield request.param
    set_language("en")


def test_too_small_names_only_a_larger_disk(language: str) -> None:
    error = TargetTooSmall(
        "/dev/sdc (250.1 GB) is too small for the snapshot's layout: that needs 500.1 GB.",
        "partition 3 would not fit. Choose a larger disk or restore single partitions "
        "(3c3c3c3c3c3c:N).",
    )
    message, hint = describe_failure(error)
    assert "/dev/sdc" in message and "500.1 GB" in message
    assert ":N" not in hint and "single partitions" not in hint
    assert hint == {"en": "Choose a larger disk.", "zh_CN": "请选择一块更大的磁盘。"}[language]


def test_a_full_drive_names_the_screens_that_free_space(language: str) -> None:
    error = NoSpace(
        "The backup drive is full (4096 bytes free) while writing x.",
        "Free space: `hourglass gc` frees what failed backups left.",
    )
    _message, hint = describe_failure(error)
    assert "hourglass" not in hint and "gc" not in hint
    assert {"en": "Free space", "zh_CN": "释放空间"}[language] in hint


def test_a_wrong_passphrase_gives_advice_and_keeps_what_else_was_found(language: str) -> None:
    foreign = " Also, 1234.key records a different repository id or config."
    message, hint = describe_failure(
        PassphraseError("Wrong passphrase: it opens none of the repository's keys.", MISTYPED_HINT)
    )
    assert "Wrong passphrase" not in message  # the app's words, in its language
    assert {"en": "Caps Lock", "zh_CN": "Caps Lock"}[language] in hint
    assert MISTYPED_HINT not in hint
    _message, hint = describe_failure(
        PassphraseError("Wrong passphrase: it opens none.", MISTYPED_HINT + foreign)
    )
    assert hint.endswith(foreign.strip())
