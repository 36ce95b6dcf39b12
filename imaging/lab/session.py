"""What a receiver learns from the lab server before the data: the session's description."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from imaging.errors import FormatError
from imaging.repository.codec import ID_SIZE


@dataclass(frozen=True)
class Session:
    """One snapshot sent to a room. The chunks (``/chunks``, ids back to back) are numbered
    in the order a restore first needs them; a datagram names its chunk by that number."""

    id: str  # 16 hex digits, also in every datagram
    snapshot: str
    group: str
    port: int
    chunks: int
    key: bytes | None  # the repository's master key (docs/LAB.md: the room is trusted)
    after: str = ""

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "id": self.id,
                "snapshot": self.snapshot,
                "group": self.group,
                "port": self.port,
                "chunks": self.chunks,
                "key": self.key.hex() if self.key is not None else None,
                "after": self.after,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Session:
        try:
            d: dict[str, Any] = json.loads(data)
            key = d["key"]
            return cls(
                id=str(d["id"]),
                snapshot=str(d["snapshot"]),
                group=str(d["group"]),
                port=int(d["port"]),
                chunks=int(d["chunks"]),
                key=bytes.fromhex(key) if key is not None else None,
                after=str(d.get("after", "")),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"The lab server sent a damaged session description: {e}.") from None

    @property
    def session_bytes(self) -> bytes:
        return bytes.fromhex(self.id)


def split_ids(data: bytes, expected: int) -> list[bytes]:
    """The chunk list ``/chunks`` sends: ``expected`` ids back to back."""
    if len(data) != expected * ID_SIZE:
        raise FormatError(
            f"The lab server sent a chunk list of {len(data)} bytes for {expected} chunks."
        )
    return [data[i : i + ID_SIZE] for i in range(0, len(data), ID_SIZE)]
