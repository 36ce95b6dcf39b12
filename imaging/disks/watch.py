"""Disks being plugged and unplugged, reported to a callback (the app refreshes its list).

Built on pyudev's monitor on a netlink socket and its :class:`pyudev.MonitorObserver` thread.
With udevd running, udev's events are used (they arrive after udev has probed the device, so
its properties are there). Without udevd, the kernel's own uevents are used instead.

A loop device, a card reader or a CD drive keeps its node when its medium goes away; the
kernel reports a ``change`` with the size dropping to (or rising from) zero. Those are
reported as ``remove`` and ``add`` too, so the callback sees every disk that appears or goes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import pyudev

from imaging.disks import sysfs
from imaging.disks.discover import IGNORED_PREFIXES, udev_running

log = logging.getLogger(__name__)

DiskCallback = Callable[[str, str], None]


class DiskWatcher:
    """Calls ``callback(action, device)`` with action ``"add"`` or ``"remove"`` and a device
    path (``/dev/sdb``, ``/dev/sdb1``) whenever a disk or partition appears or goes.

    The callback runs in the watcher's thread; it should hand the event over and return."""

    def __init__(self, callback: DiskCallback, *, source: str | None = None) -> None:
        self.callback = callback
        self.source = source
        self._observer: Any = None
        self._present: set[str] = set()
        self._lock = threading.Lock()

    def start(self) -> None:

        if self._observer is not None:
            return
        context = pyudev.Context()
        source = self.source or ("udev" if udev_running() else "kernel")
        monitor = pyudev.Monitor.from_netlink(context, source=source)
        monitor.filter_by("block")
        self._present = {f"/dev/{name}" for name in sysfs.disk_names() if sysfs.size(name) > 0}
        self._observer = pyudev.MonitorObserver(
            monitor, callback=self._event, name="hourglass-disk-watcher"
        )
        self._observer.start()

    def stop(self) -> None:
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()

    def __enter__(self) -> DiskWatcher:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def _event(self, device: Any) -> None:
        try:
            self._handle(
                str(device.action or ""),
                str(device.sys_name),
                str(device.device_type or ""),
                device.device_node,
            )
        except Exception:
            log.exception("disk watcher: handling a %s event failed", device.action)

    def _handle(self, action: str, name: str, device_type: str, node: str | None) -> None:
        if device_type not in ("disk", "partition") or name.startswith(IGNORED_PREFIXES):
            return
        path = node or f"/dev/{name}"
        if action == "change" and device_type == "disk":
            action = "add" if sysfs.size(name) > 0 else "remove"
        elif action == "add" and device_type == "disk" and sysfs.size(name) == 0:
            return  # an empty node (a loop device not yet attached): nothing to show
        if action not in ("add", "remove"):
            return
        with self._lock:
            if device_type == "disk":
                if action == "add" and path in self._present:
                    return  # a change of a disk already shown (a new table, say)
                if action == "remove" and path not in self._present:
                    return
                if action == "add":
                    self._present.add(path)
                else:
                    self._present.discard(path)
        self.callback(action, path)
