"""The agent's systemd unit (build/host/hourglass-agent.service): it parses, runs a valid
`hourglass agent`, keeps its state where the agent's default says, and dumps no core."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from imaging.agent.config import DEFAULT_CONFIG, DEFAULT_STATE_DIR
from imaging.cli.main import build_parser

SERVICE = Path(__file__).resolve().parents[2] / "build" / "host" / "hourglass-agent.service"


def settings() -> dict[str, str]:
    values = {}
    for line in SERVICE.read_text().replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            values[key] = value
    return values


def test_the_unit_verifies(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (the unit is not checked)")
    program = tmp_path / "hourglass"  # verify wants the program to exist
    program.write_text("#!/bin/sh\n")
    program.chmod(0o755)
    unit = tmp_path / SERVICE.name
    unit.write_text(SERVICE.read_text().replace("/usr/bin/hourglass", str(program)))
    out = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True
    )
    complaints = [line for line in out.stderr.splitlines() if "hourglass-agent" in line]
    assert out.returncode == 0 and not complaints, out.stderr


def test_the_unit_runs_the_agent_with_its_default_places() -> None:
    values = settings()
    argv = shlex.split(values["ExecStart"])
    assert argv[0] == "/usr/bin/hourglass"
    args = build_parser("agent").parse_args(argv[1:])
    assert args.command == "agent" and not args.once and args.action is None
    assert str(args.config) == DEFAULT_CONFIG
    assert values["ConditionPathExists"] == DEFAULT_CONFIG
    assert "/var/lib/" + values["StateDirectory"] == DEFAULT_STATE_DIR
    assert values["LimitCORE"] == "0"  # key material never lands in a core file
    assert "passphrase" not in values["ExecStart"].lower()
    assert values["Restart"] == "on-failure" and values["KillSignal"] == "SIGTERM"
