"""How the master key reaches the FUSE server: the parent writes it to the server's stdin,
never on argv or in the environment, where other processes could read it.

One byte ``1`` and the 32 key bytes, or one byte ``0`` for an unencrypted repository.
"""

from __future__ import annotations

from typing import Any


def read_master(stream: Any) -> bytes | None:
    """The key the parent wrote: ``b"\\0"`` or ``b"\\1"`` followed by 32 bytes."""
    flag = stream.read(1)
    if flag == b"\0":
        return None
    if flag != b"\1":
        raise SystemExit("imaging.files.server: no key on stdin")
    master = stream.read(32)
    if len(master) != 32:
        raise SystemExit("imaging.files.server: short key on stdin")
    return bytes(master)


def write_master(stream: Any, master: bytes | None) -> None:
    """The parent's half of :func:`read_master`."""
    stream.write(b"\0" if master is None else b"\1" + master)
    stream.flush()
