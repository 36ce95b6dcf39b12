"""Reboot and power-off only on the appliance; the shell runs for real."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.appliance import power
from imaging.appliance.vendor import in_appliance
from imaging.errors import UsageError


@pytest.mark.skipif(in_appliance(), reason="this machine is the appliance")
@pytest.mark.parametrize("action", [power.reboot, power.poweroff])
def test_outside_the_appliance_the_machine_is_never_turned_off(action: object) -> None:
    with pytest.raises(UsageError) as info:
        action()  # type: ignore[operator]
    assert "only done on the Hourglass appliance" in info.value.message


def test_shell_runs_and_reports_its_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shell = tmp_path / "shell"
    shell.write_text('#!/bin/sh\necho "$HOURGLASS_PASSPHRASE" > "$0.out"\nexit 7\n')
    shell.chmod(0o755)
    monkeypatch.setenv("SHELL", str(shell))
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "secret")
    assert power.shell_argv()[0] == str(shell)
    assert power.run_shell() == 7
    # The child never sees the passphrase.
    assert Path(f"{shell}.out").read_text() == "\n"
