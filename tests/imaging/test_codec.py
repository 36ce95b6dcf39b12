"""Chunk, index and manifest formats: round trips and every kind of tampering."""

from __future__ import annotations

import os

import pytest

from imaging.errors import FormatError, IntegrityError
from imaging.repository import codec
from imaging.repository.keys import Keys

KEYS = Keys(bytes(range(32)))
PLAIN = Keys(None)


def manifest(snapshot_id: str = "ab" * 16) -> dict[str, object]:
    return {
        "version": 1,
        "id": snapshot_id,
        "time": "2026-11-22T10:31:05+01:00",
        "source": "/dev/sda",
        "source_id": "disk:x:y",
        "kind": "disk",
        "size": 10,
        "images": [{"name": "p1", "offset": 0, "size": 10, "blocks": 1, "index_mac": "0" * 64}],
    }


@pytest.mark.parametrize("keys", [KEYS, PLAIN], ids=["encrypted", "plain"])
@pytest.mark.parametrize(
    "data", [b"x" * 5000, os.urandom(70000), b"", bytes(codec.MAX_BLOCK_SIZE)], ids=len
)
def test_chunk_round_trip(keys: Keys, data: bytes) -> None:
    chunk_id = keys.chunk_id(data)
    encoded = codec.encode_chunk(chunk_id, data, keys, 3)
    assert codec.decode_chunk(chunk_id, encoded, keys) == data
    assert codec.trailer_ok(encoded)


def test_compressible_chunk_is_compressed_and_random_is_not() -> None:
    text = b"hourglass " * 100000
    noise = os.urandom(100000)
    assert len(codec.encode_chunk(KEYS.chunk_id(text), text, KEYS, 3)) < len(text) // 10
    stored = codec.encode_chunk(KEYS.chunk_id(noise), noise, KEYS, 3)
    assert stored[5] == codec.COMPRESSION_NONE
    assert len(stored) == len(noise) + 24 + 16 + 32


def test_encrypted_chunk_does_not_contain_plaintext() -> None:
    data = b"SECRET-CONTENT-" * 1000
    encoded = codec.encode_chunk(KEYS.chunk_id(data), data, KEYS, 0)
    assert b"SECRET-CONTENT-" not in encoded


def test_chunk_ids_are_keyed() -> None:
    data = b"known file content"
    assert KEYS.chunk_id(data) != PLAIN.chunk_id(data)
    assert Keys(os.urandom(32)).chunk_id(data) != KEYS.chunk_id(data)


def test_flipped_byte_in_chunk_is_named() -> None:
    data = os.urandom(10000)
    chunk_id = KEYS.chunk_id(data)
    encoded = bytearray(codec.encode_chunk(chunk_id, data, KEYS, 3))
    encoded[100] ^= 1
    with pytest.raises(IntegrityError, match=chunk_id.hex()):
        codec.decode_chunk(chunk_id, bytes(encoded), KEYS)


def test_chunk_swapped_for_another_fails_authentication() -> None:
    a, b = os.urandom(1000), os.urandom(1000)
    encoded_b = codec.encode_chunk(KEYS.chunk_id(b), b, KEYS, 3)
    with pytest.raises(IntegrityError, match="authentication"):
        codec.decode_chunk(KEYS.chunk_id(a), encoded_b, KEYS)


def test_chunk_with_recomputed_trailer_still_fails_authentication() -> None:
    data = os.urandom(1000)
    chunk_id = KEYS.chunk_id(data)
    encoded = bytearray(codec.encode_chunk(chunk_id, data, KEYS, 3))
    encoded[30] ^= 0x80
    body = bytes(encoded[:-32])
    forged = body + codec.trailer(body)
    with pytest.raises(IntegrityError, match="authentication"):
        codec.decode_chunk(chunk_id, forged, KEYS)


def test_nonces_differ_between_chunks() -> None:
    data = b"same content"
    chunk_id = KEYS.chunk_id(data)
    nonces = {codec.encode_chunk(chunk_id, data, KEYS, 3)[12:24] for _ in range(200)}
    assert len(nonces) == 200


def test_index_round_trip_and_damage() -> None:
    ids = os.urandom(32 * 3)
    data = codec.encode_index(ids, 3 * codec.MAX_BLOCK_SIZE - 5, codec.MAX_BLOCK_SIZE)
    assert codec.decode_index(data) == (codec.MAX_BLOCK_SIZE, 3 * codec.MAX_BLOCK_SIZE - 5, ids)
    damaged = bytearray(data)
    damaged[40] ^= 4
    with pytest.raises(IntegrityError, match="checksum"):
        codec.decode_index(bytes(damaged))
    with pytest.raises(ValueError):
        codec.encode_index(ids, 10, codec.MAX_BLOCK_SIZE)


@pytest.mark.parametrize("keys", [KEYS, PLAIN], ids=["encrypted", "plain"])
def test_manifest_round_trip(keys: Keys) -> None:
    m = manifest()
    data = codec.encode_manifest(m, keys, "repo1")
    assert codec.decode_manifest(data, keys, "repo1", m["id"]) == m  # type: ignore[arg-type]


def test_manifest_is_bound_to_repository_and_id() -> None:
    m = manifest()
    data = codec.encode_manifest(m, KEYS, "repo1")
    with pytest.raises(IntegrityError):
        codec.decode_manifest(data, KEYS, "repo2", m["id"])  # type: ignore[arg-type]
    with pytest.raises(IntegrityError):
        codec.decode_manifest(data, KEYS, "repo1", "cd" * 16)


def test_encrypted_manifest_hides_names() -> None:
    data = codec.encode_manifest(manifest(), KEYS, "repo1")
    assert b"/dev/sda" not in data


def test_plain_manifest_rejects_a_wrong_id() -> None:
    data = codec.encode_manifest(manifest(), PLAIN, "repo1")
    with pytest.raises(FormatError, match="does not match its file name"):
        codec.decode_manifest(data, PLAIN, "repo1", "cd" * 16)
