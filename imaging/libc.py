"""The C library, loaded once (``ctypes.util.find_library`` runs ``ldconfig -p`` each call)."""

from __future__ import annotations

import ctypes
import functools


@functools.cache
def libc() -> ctypes.CDLL:
    """glibc, with ``errno`` kept for :func:`ctypes.get_errno` (Debian names it libc.so.6)."""
    return ctypes.CDLL("libc.so.6", use_errno=True)
