"""`hourglass lab serve`'s own inputs: the names CSV and the rate."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from imaging.cli.lab import _rate, read_names
from imaging.errors import UsageError


def test_names_csv(tmp_path: Path) -> None:
    names = tmp_path / "room.csv"
    names.write_text(
        "mac,name\n# row 1\n52:54:00:AA:00:01, Desk 1\n52-54-00-aa-00-02,Desk 2,the window seat\n\n"
    )
    assert read_names(names) == {"52:54:00:aa:00:01": "Desk 1", "52:54:00:aa:00:02": "Desk 2"}
    names.write_text("52:54:00:aa:00:01,Desk 1\nDesk 2\n")
    with pytest.raises(UsageError, match="line 2: expected MAC,NAME"):
        read_names(names)
    with pytest.raises(UsageError, match="Cannot read"):
        read_names(tmp_path / "missing.csv")


def test_rates_are_bits_per_second() -> None:
    assert _rate("200M") == 25e6
    assert _rate("1g") == 125e6
    assert _rate("800kbit") == 100e3
    assert _rate("1000000") == 125e3
    for bad in ("fast", "0", "-5M", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            _rate(bad)
