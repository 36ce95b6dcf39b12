"""The multicast datagram: a fixed header and one fragment of a stored chunk.

A datagram whose checksum does not match is dropped as if it were lost. The checksum only
catches damage in transit; what makes a chunk trustworthy is :func:`codec.decode_chunk`,
which the receiver runs on the whole chunk before it writes a byte of it.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"HGLB"
VERSION = 1
# magic, version, 0, 0, session, sequence, pass, chunk number, fragment, fragments,
# stored chunk length, CRC-32 of the header (with this field zero) and the payload
HEADER = struct.Struct("<4sBBH8sQIIHHII")
MAX_DATAGRAM = 1400
FRAGMENT = 1344  # payload bytes of every fragment but a chunk's last
assert HEADER.size + FRAGMENT <= MAX_DATAGRAM


@dataclass(frozen=True)
class Fragment:
    session: bytes
    sequence: int
    pass_number: int
    chunk: int
    fragment: int
    fragments: int
    length: int
    payload: bytes


def fragment_count(length: int) -> int:
    return max(1, -(-length // FRAGMENT))


def fragment_span(length: int, fragment: int) -> tuple[int, int]:
    """Where fragment ``fragment`` of a stored chunk of ``length`` bytes lies in it."""
    start = fragment * FRAGMENT
    return start, min(length, start + FRAGMENT)


def pack(
    session: bytes,
    sequence: int,
    pass_number: int,
    chunk: int,
    fragment: int,
    fragments: int,
    length: int,
    payload: bytes | memoryview,
) -> bytes:
    fields = (MAGIC, VERSION, 0, 0, session, sequence, pass_number, chunk, fragment, fragments)
    header = HEADER.pack(*fields, length, 0)
    crc = zlib.crc32(payload, zlib.crc32(header))
    return HEADER.pack(*fields, length, crc) + bytes(payload)


def unpack(data: bytes) -> Fragment | None:
    """The fragment a datagram carries; None for anything else (damaged, foreign, malformed)."""
    if len(data) < HEADER.size:
        return None
    magic, version, _, _, session, seq, pass_number, chunk, frag, frags, length, crc = (
        HEADER.unpack_from(data)
    )
    if magic != MAGIC or version != VERSION:
        return None
    header = HEADER.pack(
        magic, version, 0, 0, session, seq, pass_number, chunk, frag, frags, length, 0
    )
    payload = data[HEADER.size :]
    if zlib.crc32(payload, zlib.crc32(header)) != crc:
        return None
    if frags != fragment_count(length) or frag >= frags:
        return None
    start, end = fragment_span(length, frag)
    if len(payload) != end - start:
        return None
    return Fragment(session, seq, pass_number, chunk, frag, frags, length, payload)
