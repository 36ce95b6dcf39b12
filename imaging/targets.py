"""What a restore is about to overwrite, named so a person can recognise it."""

from __future__ import annotations

import os
from pathlib import Path

from imaging.devices import device_size, is_block_device
from imaging.units import decimal_size, human_size


def _sys(name: str, *parts: str) -> str:
    try:
        return Path("/sys/class/block", name, *parts).read_text().strip()
    except OSError:
        return ""


def describe_target(path: str) -> str:
    """One paragraph naming the target: model, serial, size and contents for a disk."""
    if not os.path.exists(path):
        return f"{path} (a new file)"
    if not is_block_device(path):
        return f"the file {path} ({human_size(os.path.getsize(path))}), which will be replaced"
    name = os.path.basename(os.path.realpath(path))
    model = _sys(name, "device", "model") or "unknown model"
    serial = _sys(name, "device", "serial") or "no serial"
    return f"{path}: {model}, serial {serial}, {decimal_size(device_size(path))}"
