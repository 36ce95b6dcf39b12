"""What people read: counts in the engine's messages and the CLI's lines."""

from __future__ import annotations

import re
import tokenize
from pathlib import Path

from imaging.units import count

ROOT = Path(__file__).resolve().parents[2]


def test_count_says_one_thing_or_many() -> None:
    assert count(1, "snapshot") == "1 snapshot"
    assert count(0, "snapshot") == "0 snapshots"
    assert count(2, "snapshot manifest") == "2 snapshot manifests"
    assert count(3, "copy", "copies") == "3 copies"
    assert count(1, "copy", "copies") == "1 copy"


def test_no_message_of_the_engine_says_things_in_parentheses() -> None:
    """Not "1 backup(s)" (issue 22): the engine and CLI say "1 snapshot" and "2 snapshots". The
    unattended run's HOURGLASS-RESULT lines are read by the labs' scripts and keep their
    wording."""
    found = []
    for path in sorted((ROOT / "imaging").rglob("*.py")):
        if path.parent.name == "unattended":
            continue
        with open(path, "rb") as source:
            for token in tokenize.tokenize(source.readline):
                text = token.string
                if token.type != tokenize.STRING or text.startswith(('"""', "'''")):
                    continue  # docstrings may quote what is no longer said
                words = re.sub(r"\{[^{}]*\}", "", text).replace("http(s)", "")  # f-string code
                if re.search(r"[a-z]\(s\)", words):
                    found.append(f"{path.relative_to(ROOT)}:{token.start[0]}: {text}")
    assert not found, "\n".join(found)
