"""Hostile repository files: every parser either returns exactly what was encoded or raises
:class:`IntegrityError` (its subclass :class:`FormatError` included); nothing else escapes.

Each test runs 300 generated examples per run (``FAST``) plus the unaltered valid file as an
explicit example, so the path that accepts input is always exercised and checked too.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from imaging.errors import FormatError, IntegrityError
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


PLAINTEXT = b"a" * 300
CHUNK_ID = KEYS.chunk_id(PLAINTEXT)
VALID_CHUNK = codec.encode_chunk(CHUNK_ID, PLAINTEXT, KEYS, 3)
INDEX_IDS = bytes(range(64))
INDEX_SIZE = codec.MAX_BLOCK_SIZE + 1
VALID_INDEX = codec.encode_index(INDEX_IDS, INDEX_SIZE, codec.MAX_BLOCK_SIZE)


@FAST
@example(VALID_CHUNK)
@given(_mutations(VALID_CHUNK))
def test_chunk_parser(data: bytes) -> None:
    try:
        plaintext = codec.decode_chunk(CHUNK_ID, data, KEYS)
    except IntegrityError:
        assert data != VALID_CHUNK, "the unaltered chunk was refused"
        return
    event("decoded")
    # The trailer and the AEAD tag cover every byte: only the file as written decodes.
    assert data == VALID_CHUNK
    assert plaintext == PLAINTEXT


@FAST
@example(VALID_INDEX)
@given(_mutations(VALID_INDEX))
def test_index_parser(data: bytes) -> None:
    try:
        decoded = codec.decode_index(data)
    except IntegrityError:
        assert data != VALID_INDEX, "the unaltered index was refused"
        return
    event("decoded")
    assert data == VALID_INDEX
    assert decoded == (codec.MAX_BLOCK_SIZE, INDEX_SIZE, INDEX_IDS)


def _plain_manifest_bytes(obj: object) -> bytes:
    header = codec.SNAP_HEADER.pack(codec.SNAP_MAGIC, 1, 0, bytes(12))
    body = header + json.dumps(obj).encode()
    return body + codec.trailer(body)


def _json(obj: object) -> str:
    """Canonical JSON: unlike ``==`` it tells ``true`` from ``1`` and ``1.0`` from ``1``."""
    return json.dumps(obj, sort_keys=True)


def _is_count(v: object) -> bool:
    return type(v) is int and v >= 0


def _assert_readable(m: dict[str, Any], snapshot_id: str) -> None:
    """What every reader indexes without further checks (docs/FORMAT.md, manifest)."""
    assert type(m["version"]) is int and m["version"] == 1 and m["id"] == snapshot_id
    assert m["kind"] in ("file", "partition", "disk")
    assert isinstance(m["source"], str) and isinstance(m["source_id"], str)
    assert _is_count(m["size"]) and _is_count(m.get("time_ns", 0))
    datetime.fromisoformat(m["time"])
    images = m["images"]
    assert isinstance(images, list) and images
    names = [image["name"] for image in images]
    assert len(set(names)) == len(names)
    for image in images:
        name = image["name"]
        assert isinstance(name, str) and 0 < len(name) <= 32
        assert name.replace("_", "").replace("-", "").isalnum()  # no "/", no ".."
        assert all(_is_count(image[key]) for key in ("offset", "size", "blocks"))
        assert isinstance(image["index_mac"], str) and len(image["index_mac"]) == 64


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=30,
)

VALID_MANIFEST: dict[str, Any] = {
    "version": 1,
    "id": "ab" * 16,
    "time": "2026-11-22T10:31:05+01:00",
    "source": "s",
    "source_id": "s",
    "kind": "file",
    "size": 1,
    "images": [{"name": "data", "offset": 0, "size": 1, "blocks": 1, "index_mac": "0" * 64}],
}


MANIFEST_FIELDS = {
    "version": st.sampled_from([1, 2, "1", None, True]),
    "id": st.sampled_from(["ab" * 16, "x", 5]),
    "time": st.sampled_from(["2026-11-22T10:31:05+01:00", "2026-11-22 10:31", "yesterday", 3]),
    "time_ns": json_values,
    "source": json_values,
    "source_id": json_values,
    "kind": st.sampled_from(["disk", "file", "partition", "other", 1]),
    "size": st.integers(-2, 2**70) | json_values,
}
IMAGE_FIELDS = {
    "name": st.sampled_from(["p1", "data", "../x", "a/b", ".", "", "x" * 33, "data", True]),
    "offset": st.integers(-2, 2**70) | json_values,
    "size": st.integers(-2, 2**70) | json_values,
    "blocks": st.booleans() | json_values,
    "index_mac": st.sampled_from(["0" * 64, "0" * 63, "short", None]),
    "method": json_values,
}


@st.composite
def _near_valid_manifests(draw: st.DrawFn) -> dict[str, Any]:
    """VALID_MANIFEST with a few fields (its own or its images') replaced or removed: most
    are refused, some are still valid, so both sides of the validator are exercised."""
    m: dict[str, Any] = json.loads(json.dumps(VALID_MANIFEST))
    images: list[dict[str, Any]] = m["images"]
    images.extend(dict(images[0], name=f"p{i}") for i in range(draw(st.integers(0, 2))))
    for _ in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from([m, *images]))
        fields = MANIFEST_FIELDS if target is m else IMAGE_FIELDS
        key = draw(st.sampled_from(sorted(fields)))
        if draw(st.booleans()):
            target[key] = draw(fields[key])
        else:
            target.pop(key, None)
    return m


@FAST
@example(VALID_MANIFEST)
@example({**VALID_MANIFEST, "version": True})  # JSON true == 1 in Python: was accepted
@example({**VALID_MANIFEST, "kind": "other"})
@example({**VALID_MANIFEST, "images": [{**VALID_MANIFEST["images"][0], "name": "../x"}]})
@given(
    _near_valid_manifests()
    | st.fixed_dictionaries(
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
def test_manifest_validation(obj: dict[str, Any]) -> None:
    try:
        manifest = codec.decode_manifest(_plain_manifest_bytes(obj), PLAIN, "r", "ab" * 16)
    except IntegrityError:
        assert _json(obj) != _json(VALID_MANIFEST), "a valid manifest was refused"
        return
    event("accepted")
    assert _json(manifest) == _json(obj)
    _assert_readable(manifest, "ab" * 16)


VALID_ENCRYPTED_MANIFEST = codec.encode_manifest(VALID_MANIFEST, KEYS, "r")


@FAST
@example(VALID_ENCRYPTED_MANIFEST)
@given(_mutations(VALID_ENCRYPTED_MANIFEST))
def test_encrypted_manifest_parser(data: bytes) -> None:
    try:
        manifest = codec.decode_manifest(data, KEYS, "r", "ab" * 16)
    except IntegrityError:
        assert data != VALID_ENCRYPTED_MANIFEST, "the unaltered manifest was refused"
        return
    event("decoded")
    assert data == VALID_ENCRYPTED_MANIFEST
    assert manifest == VALID_MANIFEST


VALID_SLOT_OBJ = keys.make_slot(bytes(32), "pw", "ab" * 16, "passphrase", "cd" * 32)
VALID_SLOT = json.dumps(VALID_SLOT_OBJ).encode()


def _assert_bounded(slot: dict[str, Any]) -> None:
    """A parsed slot never asks the key derivation for more than the limits allow."""
    kdf = slot["kdf"]
    assert all(type(kdf[k]) is int for k in ("memory", "passes", "lanes"))
    assert 1 <= kdf["passes"] <= keys.MAX_KDF_PASSES
    assert 1 <= kdf["lanes"] <= keys.MAX_KDF_LANES
    assert 8 * kdf["lanes"] <= kdf["memory"] <= keys.MAX_KDF_MEMORY_KIB
    assert slot["kind"] in ("passphrase", "recovery")


KDF_LIMITS = {
    "memory": keys.MAX_KDF_MEMORY_KIB,
    "passes": keys.MAX_KDF_PASSES,
    "lanes": keys.MAX_KDF_LANES,
}


@st.composite
def _near_valid_kdfs(draw: st.DrawFn) -> dict[str, Any]:
    """The valid slot's Argon2id parameters with some set around and beyond their limits
    (random dictionaries almost never name "argon2id", so never reach these checks)."""
    kdf: dict[str, Any] = dict(VALID_SLOT_OBJ["kdf"])
    for key in draw(st.sets(st.sampled_from(sorted(KDF_LIMITS)), min_size=1)):
        limit = KDF_LIMITS[key]
        kdf[key] = draw(
            st.sampled_from([0, 1, 7, limit - 1, limit, limit + 1, 2**31, 2**64])
            | st.integers(-1, 2 * limit)
            | json_values
        )
    return kdf


def _slot_with_kdf(**params: int) -> bytes:
    return json.dumps({**VALID_SLOT_OBJ, "kdf": {**VALID_SLOT_OBJ["kdf"], **params}}).encode()


@FAST
@example(VALID_SLOT)
@example(_slot_with_kdf(memory=keys.MAX_KDF_MEMORY_KIB + 1))
@example(_slot_with_kdf(passes=keys.MAX_KDF_PASSES + 1))
@example(_slot_with_kdf(lanes=keys.MAX_KDF_LANES + 1, memory=8 * (keys.MAX_KDF_LANES + 1)))
@example(_slot_with_kdf(lanes=4, memory=31))
@given(
    _mutations(VALID_SLOT)
    | st.builds(lambda v: json.dumps(v).encode(), json_values)
    | st.builds(
        lambda kdf: json.dumps({**VALID_SLOT_OBJ, "kdf": kdf}).encode(),
        st.dictionaries(st.sampled_from(["name", "memory", "passes", "lanes", "salt"]), json_values)
        | _near_valid_kdfs(),
    )
)
def test_key_slot_parser(data: bytes) -> None:
    try:
        slot = keys.parse_slot(data)
    except FormatError:
        assert data != VALID_SLOT, "the unaltered key slot was refused"
        return
    event("parsed")
    assert slot == json.loads(data)
    _assert_bounded(slot)
    if data == VALID_SLOT:
        assert slot == VALID_SLOT_OBJ
