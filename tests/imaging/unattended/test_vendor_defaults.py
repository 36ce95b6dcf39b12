"""The vendor's [unattended] defaults are the lowest layer of the orders: a config file and
the kernel's parameters override them, and without a vendor action nothing changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from imaging.appliance.vendor import VENDOR_FILE_VARIABLE, VendorSettings
from imaging.repository.store import Repository
from imaging.unattended.locations import Locations
from imaging.unattended.orders import orders_from
from imaging.unattended.run import RESULT, gather_keys, run_unattended, vendor_keys

BACKUP = VendorSettings(
    repository="label:ACME-DATA/backups",
    unattended_action="backup",
    unattended_source="/dev/nvme0n1",
    unattended_after="poweroff",
)


def keys(cmdline: str, vendor: VendorSettings) -> dict[str, str]:
    with Locations() as locations:
        return gather_keys(cmdline, locations, vendor)


def test_no_vendor_action_adds_nothing() -> None:
    assert vendor_keys(VendorSettings()) == {}
    assert vendor_keys(VendorSettings(repository="/srv/repo", unattended_source="/dev/sda")) == {}
    assert keys("quiet hourglass.run=verify hourglass.repo=/r", VendorSettings()) == {
        "run": "verify",
        "repo": "/r",
    }


def test_the_vendor_action_alone_is_a_whole_order() -> None:
    found = keys("quiet splash", BACKUP)
    assert found == {
        "run": "backup",
        "source": "/dev/nvme0n1",
        "after": "poweroff",
        "repo": "LABEL=ACME-DATA:/backups",
    }
    orders = orders_from(found)
    assert (orders.run, orders.source, orders.after) == ("backup", "/dev/nvme0n1", "poweroff")
    assert orders.repo is not None and (orders.repo.kind, orders.repo.source) == (
        "label",
        "ACME-DATA",
    )


@pytest.mark.parametrize(
    ("action", "source", "after", "expected"),
    [
        ("restore", "/dev/sda", "stay", {"run": "restore", "target": "/dev/sda", "after": "ui"}),
        ("verify", "auto", "reboot", {"run": "verify", "after": "reboot"}),
        ("backup", "", "stay", {"run": "backup", "after": "ui"}),
    ],
)
def test_vendor_keys(action: str, source: str, after: str, expected: dict[str, str]) -> None:
    vendor = VendorSettings(
        unattended_action=action, unattended_source=source, unattended_after=after
    )
    assert vendor_keys(vendor) == expected


def test_the_config_file_and_the_kernel_override_the_vendor(tmp_path: Path) -> None:
    config = tmp_path / "orders.conf"
    config.write_text("after=reboot\nrepo=/srv/lab\nsource=/dev/sdb\n")
    found = keys(f"hourglass.config={config} hourglass.after=shell", BACKUP)
    assert found == {"run": "backup", "source": "/dev/sdb", "after": "shell", "repo": "/srv/lab"}


def test_another_action_does_not_take_the_vendors_disk() -> None:
    found = keys("hourglass.run=restore hourglass.target=/dev/sdc", BACKUP)
    assert found["run"] == "restore" and found["target"] == "/dev/sdc"
    assert "source" not in found  # named for the vendor's backup, not for this restore
    assert (found["repo"], found["after"]) == ("LABEL=ACME-DATA:/backups", "poweroff")


def test_without_orders_or_vendor_action_the_run_fails_as_before(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(VENDOR_FILE_VARIABLE, str(tmp_path / "none.toml"))
    outcome = run_unattended("BOOT_IMAGE=/live/vmlinuz quiet", say=lambda _: None)
    assert not outcome.ok and outcome.after == "ui"
    assert outcome.line == (
        f"{RESULT} FAILED hourglass.run='': expected one of backup, restore, verify, files-restore."
    )
    assert capsys.readouterr().out == outcome.line + "\n"


def test_a_vendor_file_alone_runs_its_action(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verify of the vendor's repository (a plain path here), from the vendor file only."""
    repo = tmp_path / "repo"
    Repository.init(repo, encryption="none")
    vendor = tmp_path / "vendor.toml"
    vendor.write_text(
        f'[defaults]\nrepository = "{repo}"\n[unattended]\naction = "verify"\nafter = "reboot"\n'
    )
    monkeypatch.setenv(VENDOR_FILE_VARIABLE, str(vendor))
    said: list[str] = []
    outcome = run_unattended("quiet", say=said.append)
    assert outcome.ok, outcome.line
    assert outcome.after == "reboot"
    assert outcome.line.startswith(f"{RESULT} OK verify (structure) of 0 snapshot(s)")
    assert said[0] == f"repository {repo} opened"
