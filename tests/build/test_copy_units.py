"""The host-side schedule (build/host/): the systemd units parse, and the command they run
is a valid `hourglass copy` that takes the passphrase from a file."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from imaging.cli.main import build_parser

HOST = Path(__file__).resolve().parents[2] / "build" / "host"
SERVICE = HOST / "hourglass-copy@.service"
TIMER = HOST / "hourglass-copy@.timer"


def config_values() -> dict[str, str]:
    values = {}
    for line in (HOST / "copy.conf.example").read_text().splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def exec_start() -> str:
    text = SERVICE.read_text().replace("\\\n", " ")
    (line,) = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=")


def test_units_verify(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (the units are not checked)")
    # verify wants the program to exist: a stand-in at the same place in a copy of the units.
    program = tmp_path / "hourglass"
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    for unit in (SERVICE, TIMER):
        text = unit.read_text().replace("/usr/bin/hourglass", str(program))
        (tmp_path / unit.name).write_text(text)
    names = [
        str(tmp_path / "hourglass-copy@offsite.service"),
        str(tmp_path / "hourglass-copy@offsite.timer"),
    ]
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *names], capture_output=True, text=True
    )
    # Unknown keys and bad values are warnings only: none is allowed either.
    complaints = [line for line in out.stderr.splitlines() if "hourglass-copy" in line]
    assert out.returncode == 0 and not complaints, out.stderr


def test_the_command_is_a_copy_with_the_passphrase_from_a_file() -> None:
    command = exec_start()
    assert command.startswith("/usr/bin/hourglass copy ")
    assert "--passphrase-file ${CREDENTIALS_DIRECTORY}/passphrase" in command
    values = config_values() | {"CREDENTIALS_DIRECTORY": "/run/credentials/x"}
    argv: list[str] = []
    for word in command.split()[1:]:
        braced = re.fullmatch(r"(.*)\$\{(\w+)\}(.*)", word)
        if braced:  # one argument, as systemd expands ${VAR}
            argv.append(braced.group(1) + values[braced.group(2)] + braced.group(3))
        elif word.startswith("$"):  # split on spaces, as systemd expands $VAR
            argv.extend(values[word[1:]].split())
        else:
            argv.append(word)
    args = build_parser("copy").parse_args(argv)
    assert args.command == "copy" and args.window == "22:00-06:00"
    assert args.to == values["HOURGLASS_COPY_TO"] and args.repo == values["HOURGLASS_REPO"]
    assert args.credentials == Path("/etc/hourglass/s3-credentials")
    assert "PASSPHRASE=" not in (HOST / "copy.conf.example").read_text()
    # The window's end with work left (exit 14) is no failure of the service.
    assert "SuccessExitStatus=14" in SERVICE.read_text()
