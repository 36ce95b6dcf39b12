"""File-level commands on a whole-disk snapshot of several filesystems: the partition is
named by --partition N or SNAPSHOT@N, and a command that needs one says how to name it
(issue 22, item 11: `files ls --partition 2` was "unrecognized arguments", and `files
versions` asked for SNAPSHOT:N, which it does not take)."""

from __future__ import annotations

import json

import pytest

from imaging.errors import UsageError
from tests.imaging.disks.conftest import Backup, SourceDisk

pytestmark = [pytest.mark.integration, pytest.mark.root]


def listed(capsys: pytest.CaptureFixture[str]) -> set[str]:
    out = capsys.readouterr().out
    return {entry["name"] for entry in json.loads(out[out.index("[") :])}


def test_partition_by_option_or_suffix(
    gpt_source: SourceDisk, gpt_backup: Backup, capsys: pytest.CaptureFixture[str]
) -> None:
    root = next(p for p in gpt_source.parts if p.number == 8)
    top = {path.split("/")[0] for path in root.files}
    capsys.readouterr()
    assert gpt_backup.cli("files", "ls", "latest", "/", "--partition", "8", "--json") == 0
    assert top <= listed(capsys)
    assert gpt_backup.cli("files", "ls", "latest@8", "/", "--json") == 0
    assert top <= listed(capsys)
    assert gpt_backup.cli("files", "ls", "latest@8", "/", "--partition", "3") == 2
    assert "Two different partitions" in capsys.readouterr().err

    assert gpt_backup.cli("files", "ls", "latest", "/") == UsageError.exit_code
    err = capsys.readouterr().err
    assert "--partition N" in err and "SNAPSHOT:N" not in err
    some_file = "/" + sorted(root.files)[0]
    assert gpt_backup.cli("files", "versions", some_file) == UsageError.exit_code
    assert "--partition N" in capsys.readouterr().err
    assert gpt_backup.cli("files", "versions", some_file, "--partition", "8", "--json") == 0
    (version,) = json.loads(capsys.readouterr().out)
    assert version["hash"] == root.files[some_file[1:]]  # SHA-256, as tree_digest
