"""Opening a restore target exclusively while udev still probes it (issue 22, item 10): a
second restore to a disk seconds after the first found it "Device or resource busy". The
open waits for udev to settle and tries once more; a device that stays busy is refused."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from imaging.image import devices
from tests.support import MiB, loop_device

pytestmark = [pytest.mark.integration, pytest.mark.root]


def test_busy_device_is_opened_once_udev_has_settled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (8 * MiB))
    settled: list[int] = []
    with loop_device(image) as device:
        prober = os.open(device, os.O_RDONLY | os.O_EXCL)  # what blkid does for a moment
        real_settle = devices.settle_udev

        def probe_ends(timeout: int = devices.SETTLE_TIMEOUT) -> None:
            real_settle(timeout)  # the real udevadm settle runs
            settled.append(timeout)
            os.close(prober)  # and the probe it waited for is over

        monkeypatch.setattr(devices, "settle_udev", probe_ends)
        fd = devices.open_exclusive(device, os.O_WRONLY)
        try:
            assert os.fstat(fd).st_rdev == os.stat(device).st_rdev
        finally:
            os.close(fd)
    assert settled == [devices.SETTLE_TIMEOUT], "one wait, then the second try"


def test_a_device_that_stays_busy_is_refused_after_one_wait(tmp_path: Path) -> None:
    image = tmp_path / "disk.img"
    image.write_bytes(b"\0" * (8 * MiB))
    with loop_device(image) as device:
        holder = os.open(device, os.O_RDONLY | os.O_EXCL)
        try:
            with pytest.raises(OSError) as caught:
                devices.open_exclusive(device, os.O_WRONLY)
            assert caught.value.errno == errno.EBUSY
        finally:
            os.close(holder)
