"""Hostile repository files: every parser gives a typed error, never a crash."""

from __future__ import annotations

import contextlib
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imaging.errors import FormatError, HourglassError
from imaging.repository import codec, keys
from imaging.repository.keys import Keys

KEYS = Keys(bytes(32))
PLAIN = Keys(None)
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutations(valid: bytes) -> st.SearchStrategy[bytes]:
    """Random bytes, and the valid encoding with bytes flipped, cut or appended."""
    flips = st.lists(st.tuples(st.integers(0, len(valid) - 1), st.integers(1, 255)), max_size=4)

    def apply(changes: list[tuple[int, int]], cut: int, extra: bytes) -> bytes:
        data = bytearray(valid)
        for pos, xor in changes:
            data[pos] ^= xor
        return bytes(data[: len(data) - cut]) + extra

    return st.one_of(
        st.binary(max_size=600),
        st.builds(apply, flips, st.integers(0, 40), st.binary(max_size=8)),
    )


VALID_CHUNK = codec.encode_chunk(KEYS.chunk_id(b"a" * 300), b"a" * 300, KEYS, 3)
VALID_INDEX = codec.encode_index(bytes(64), codec.MAX_BLOCK_SIZE + 1, codec.MAX_BLOCK_SIZE)


@FAST
@given(_mutations(VALID_CHUNK))
def test_chunk_parser(data: bytes) -> None:
    with contextlib.suppress(HourglassError):
        codec.decode_chunk(KEYS.chunk_id(b"a" * 300), data, KEYS)


@FAST
@given(_mutations(VALID_INDEX))
def test_index_parser(data: bytes) -> None:
    with contextlib.suppress(HourglassError):
        codec.decode_index(data)


def _plain_manifest_bytes(obj: object) -> bytes:
    header = codec.SNAP_HEADER.pack(codec.SNAP_MAGIC, 1, 0, bytes(12))
    body = header + json.dumps(obj).encode()
    return body + codec.trailer(body)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)


@FAST
@given(
    st.fixed_dictionaries(
        {},
        optional={
            "version": st.sampled_from([1, 2, "1", None]),
            "id": st.sampled_from(["ab" * 16, "x", 5]),
            "time": st.sampled_from(["2026-11-22T10:31:05+01:00", "yesterday", 3]),
            "source": json_values,
            "source_id": json_values,
            "kind": st.sampled_from(["disk", "file", "partition", "other", 1]),
            "size": json_values,
            "images": st.lists(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "name": st.sampled_from(["p1", "data", "../x", "", "p1"]),
                        "offset": json_values,
                        "size": json_values,
                        "blocks": json_values,
                        "index_mac": st.sampled_from(["0" * 64, "short", None]),
                    },
                ),
                max_size=3,
            )
            | json_values,
        },
    )
)
def test_manifest_validation(obj: dict[str, object]) -> None:
    with contextlib.suppress(HourglassError):
        codec.decode_manifest(_plain_manifest_bytes(obj), PLAIN, "r", "ab" * 16)


@FAST
@given(
    _mutations(
        codec.encode_manifest(
            {
                "version": 1,
                "id": "ab" * 16,
                "time": "2026-11-22T10:31:05+01:00",
                "source": "s",
                "source_id": "s",
                "kind": "file",
                "size": 1,
                "images": [
                    {"name": "data", "offset": 0, "size": 1, "blocks": 1, "index_mac": "0" * 64}
                ],
            },
            KEYS,
            "r",
        )
    )
)
def test_encrypted_manifest_parser(data: bytes) -> None:
    with contextlib.suppress(HourglassError):
        codec.decode_manifest(data, KEYS, "r", "ab" * 16)


VALID_SLOT = json.dumps(
    keys.make_slot(bytes(32), "pw", "ab" * 16, "passphrase", "cd" * 32)
).encode()


@FAST
@given(
    _mutations(VALID_SLOT)
    | st.builds(lambda v: json.dumps(v).encode(), json_values)
    | st.builds(
        lambda kdf: json.dumps({**json.loads(VALID_SLOT), "kdf": kdf}).encode(),
        st.dictionaries(
            st.sampled_from(["name", "memory", "passes", "lanes", "salt"]), json_values
        ),
    )
)
def test_key_slot_parser(data: bytes) -> None:
    with contextlib.suppress(FormatError):
        keys.parse_slot(data)
