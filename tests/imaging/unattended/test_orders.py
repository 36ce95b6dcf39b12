"""Parsing unattended orders and choosing disks: the rules labs rely on."""

from __future__ import annotations

import pytest

from imaging.disks.model import Disk
from imaging.errors import NotFound, UsageError
from imaging.unattended.choose import choose_disk
from imaging.unattended.orders import orders_from, parse_cmdline, parse_config, parse_location


def test_cmdline_keys() -> None:
    keys = parse_cmdline(
        "BOOT_IMAGE=/live/vmlinuz boot=live quiet hourglass.run=restore "
        'hourglass.repo=LABEL=BACKUP:/repos/lab hourglass.snapshot="2026-11-22T10:31:05" '
        "hourglass.after=poweroff hourglass.target=S3Z9NB0K123456"
    )
    orders = orders_from(keys)
    assert orders.run == "restore" and orders.after == "poweroff"
    assert orders.repo is not None and orders.repo.kind == "label"
    assert (orders.repo.source, orders.repo.path) == ("BACKUP", "/repos/lab")
    assert orders.snapshot == "2026-11-22T10:31:05"
    assert orders.target == "S3Z9NB0K123456"


@pytest.mark.parametrize(
    ("text", "kind", "source", "path"),
    [
        ("UUID=1234-ABCD:/r", "uuid", "1234-ABCD", "/r"),
        ("LABEL=x", "label", "x", "/"),
        ("/dev/sdb1:/hourglass", "partition", "/dev/sdb1", "/hourglass"),
        ("nfs://server/export/backups", "nfs", "nfs://server/export/backups", "/"),
        ("smb://nas/share/pc1", "smb", "smb://nas/share/pc1", "/"),
        ("https://lab.example/repo/", "http", "https://lab.example/repo/", "/"),
        ("s3://lab-images/pc/7", "s3", "s3://lab-images/pc/7", "/"),
    ],
)
def test_locations(text: str, kind: str, source: str, path: str) -> None:
    loc = parse_location(text)
    assert (loc.kind, loc.source, loc.path) == (kind, source, path)
    assert parse_location(loc.describe()) == loc  # what messages show parses back


def test_bad_orders_name_the_key() -> None:
    with pytest.raises(UsageError, match="hourglass.run"):
        orders_from({"run": "format-everything", "repo": "LABEL=x"})
    with pytest.raises(UsageError, match="hourglass.after"):
        orders_from({"run": "backup", "repo": "LABEL=x", "after": "dance"})
    with pytest.raises(UsageError, match="read-only"):
        orders_from({"run": "backup", "repo": "http://lab/repo"})
    with pytest.raises(UsageError, match="hourglass.repo"):
        orders_from({"run": "backup"})
    with pytest.raises(UsageError, match="not a location"):
        orders_from({"run": "backup", "repo": "ftp://x"})
    with pytest.raises(UsageError, match="paths"):
        orders_from({"run": "files-restore", "repo": "LABEL=x"})


def test_object_store_orders() -> None:
    orders = orders_from(
        {
            "run": "restore",
            "repo": "s3://lab-images/pc7",
            "credentials": "LABEL=KEYS:/aws",
            "s3_endpoint": "https://s3.lab.example:7480",
            "ca_file": "UUID=1234-ABCD:/lab-ca.pem",
        }
    )
    assert orders.repo is not None and orders.repo.kind == "s3"
    assert orders.s3_endpoint == "https://s3.lab.example:7480"
    assert orders.credentials is not None and orders.credentials.kind == "label"
    assert orders.ca_file is not None and orders.ca_file.path == "/lab-ca.pem"
    assert not orders.unknown
    with pytest.raises(UsageError, match="s3_endpoint"):
        orders_from({"run": "backup", "repo": "s3://b1b", "s3_endpoint": "s3.lab.example"})
    with pytest.raises(UsageError, match="files-restore"):
        orders_from({"run": "files-restore", "repo": "s3://b1b", "paths": "/a", "to": "/x"})
    with pytest.raises(UsageError, match="not in a bucket"):
        orders_from({"run": "backup", "repo": "s3://b1b", "passphrase_file": "s3://b1b/p"})
    with pytest.raises(UsageError, match="s3://BUCKET"):
        orders_from({"run": "backup", "repo": "s3://"})


def test_lab_orders() -> None:
    """A PC booted from a lab's entry: the session gives the repository and the key."""
    orders = orders_from({"run": "restore", "lab": "http://10.77.6.1:8470/", "after": "poweroff"})
    assert orders.lab == "http://10.77.6.1:8470"
    assert orders.repo is None and not orders.unknown
    for bad in ("10.77.6.1:8470", "https://10.77.6.1:8470", "http://10.77.6.1:8470/x"):
        with pytest.raises(UsageError, match="hourglass.lab"):
            orders_from({"run": "restore", "lab": bad})
    with pytest.raises(UsageError, match="hourglass.lab"):
        orders_from({"run": "backup", "lab": "http://10.77.6.1:8470"})
    with pytest.raises(UsageError, match="hourglass.repo"):
        orders_from({"run": "restore"})


def test_config_file() -> None:
    keys = parse_config(
        "# lab 3\nhourglass.run=backup\nrepo = nfs://nas/backups\n\nafter='reboot'\n"
    )
    assert orders_from(keys).after == "reboot"
    with pytest.raises(UsageError, match="Line 2"):
        parse_config("run=backup\nthis is not a key\n")


def disk(
    device: str,
    serial: str,
    *,
    transport: str = "sata",
    removable: bool = False,
    boot: bool = False,
) -> Disk:
    return Disk(
        device,
        f"/dev/disk/by-id/ata-{serial}",
        "Model",
        serial,
        256 * 10**9,
        512,
        4096,
        transport,
        removable,
        False,
        "gpt",
        (),
        boot,
    )


def test_only_internal_disk_is_chosen() -> None:
    disks = [
        disk("/dev/sda", "A"),
        disk("/dev/sdb", "B", transport="usb", removable=True),
        disk("/dev/sdc", "C", boot=True),
        disk("/dev/vdd", "D", transport="virtio"),
    ]
    assert choose_disk(disks, "", role="source", exclude={"/dev/vdd"}).device == "/dev/sda"


def test_two_candidates_fail_and_name_both() -> None:
    disks = [disk("/dev/sda", "A"), disk("/dev/nvme0n1", "B", transport="nvme")]
    with pytest.raises(UsageError, match="/dev/sda.*/dev/nvme0n1.*will not guess"):
        choose_disk(disks, "", role="target", exclude=set())


def test_named_disk_by_serial_and_refusals() -> None:
    disks = [disk("/dev/sda", "A"), disk("/dev/sdb", "B"), disk("/dev/sr0", "ISO", boot=True)]
    assert choose_disk(disks, "B", role="target", exclude=set()).device == "/dev/sdb"
    assert (
        choose_disk(disks, "/dev/disk/by-id/ata-A", role="target", exclude=set()).device
        == "/dev/sda"
    )
    with pytest.raises(UsageError, match="holds the repository"):
        choose_disk(disks, "A", role="target", exclude={"/dev/sda"})
    with pytest.raises(UsageError, match="booted from"):
        choose_disk(disks, "ISO", role="target", exclude=set())
    with pytest.raises(NotFound, match="no such disk"):
        choose_disk(disks, "Z", role="target", exclude=set())
    with pytest.raises(NotFound, match="No internal disk"):
        choose_disk([disk("/dev/sdb", "B", transport="usb")], "", role="source", exclude=set())
