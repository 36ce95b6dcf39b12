"""An unattended restore and verify from a set with one member lost: they succeed from the
other copy, and the one result line says which member was read around (a lab must know)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from imaging.unattended.run import RESULT, run_unattended
from tests.conftest import PASSPHRASE
from tests.imaging.disks.helpers import attached
from tests.support import MiB, run_cli, sh, write_random_image

pytestmark = [pytest.mark.integration, pytest.mark.root]


def test_a_lost_member_is_named_in_the_result_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    passfile = tmp_path / "pass"
    passfile.write_text(PASSPHRASE + "\n")
    pw = ("--passphrase-file", str(passfile))
    assert run_cli("init", "--redundancy", "copies", str(a), str(b), *pw) == 0
    source = tmp_path / "source.img"
    write_random_image(source, 8 * MiB)
    assert run_cli("backup", "--repo", str(b), *pw, str(source)) == 0
    shutil.rmtree(a)
    new = tmp_path / "new.img"
    sh("truncate", "-s", "16M", new)
    with attached(new) as disk:
        capsys.readouterr()
        said: list[str] = []
        common = f"hourglass.repo={b} hourglass.passphrase_file={passfile} hourglass.after=shell "
        outcome = run_unattended(
            common + f"hourglass.run=restore hourglass.target={disk}", say=said.append
        )
        assert outcome.ok, outcome.line
        assert f"read around member 0 ({a})" in outcome.line, outcome.line
        assert "check --repair" in outcome.line
        printed = [x for x in capsys.readouterr().out.splitlines() if x.startswith(RESULT)]
        assert len(printed) == 1 and "read around member 0" in printed[0], printed
        with open(disk, "rb") as f:
            assert f.read(8 * MiB) == source.read_bytes()
        outcome = run_unattended(common + "hourglass.run=verify", say=said.append)
        assert outcome.ok, outcome.line
        assert f"read around member 0 ({a})" in outcome.line, outcome.line
