"""Byte formats of chunks, indexes and snapshot manifests (docs/FORMAT.md).

Every parser here takes untrusted bytes and either returns a value or raises
:class:`FormatError` / :class:`IntegrityError` with a message naming the file: nothing else
escapes, whatever the input (tests/imaging/test_codec_fuzz.py holds it to that).
"""

from __future__ import annotations

import json
import os
import struct
import threading
from datetime import datetime
from typing import Any

import blake3
import zstandard
from cryptography.exceptions import InvalidTag

from imaging.errors import FormatError, IntegrityError
from imaging.repository.keys import Keys

# One block size per repository (config "block_size"). Smaller blocks store less for a
# small change (an incremental re-stores whole blocks) and cost a larger index; bench/README.md
# has the measurements behind the default. Repositories made before 1 MiB became the default
# hold 4 MiB blocks and stay that way.
BLOCK_SIZES = tuple(1 << n for n in range(18, 23))  # 256 KiB ... 4 MiB
DEFAULT_BLOCK_SIZE = 1 << 20
MAX_BLOCK_SIZE = BLOCK_SIZES[-1]
ID_SIZE = 32
ZERO_ID = bytes(ID_SIZE)
UNUSED_ID = b"\xff" * ID_SIZE
RESERVED_IDS = (ZERO_ID, UNUSED_ID)
TRAILER_SIZE = 32

CHUNK_MAGIC = b"HGCK"
CHUNK_HEADER = struct.Struct(
    "<4sBBBBI12s"
)  # magic, version, compression, encryption, 0, len, nonce
INDEX_MAGIC = b"HGIX"
INDEX_HEADER = struct.Struct("<4sB3xI4xQQ")  # magic, version, block size, image size, count
SNAP_MAGIC = b"HGSN"
SNAP_HEADER = struct.Struct("<4sBB2x12s")  # magic, version, encryption, nonce
SNAP_AAD = b"hourglass-snapshot"

COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
MAX_CHUNK_PLAINTEXT = 64 * 1024 * 1024

_local = threading.local()
_zero_blocks: dict[int, bytes] = {}


def is_zero(data: bytes | bytearray | memoryview) -> bool:
    """True when every byte is zero (memcmp speed; memoryview comparison is 40x slower)."""
    n = len(data)
    if isinstance(data, memoryview):
        head = data[:4096].tobytes()
        if head.count(0) != len(head):
            return False  # most blocks are decided here, without copying 4 MiB
        data = data.tobytes()
    if n in BLOCK_SIZES:
        zeros = _zero_blocks.get(n)
        if zeros is None:
            zeros = _zero_blocks.setdefault(n, bytes(n))
        return data == zeros
    return data.count(0) == n


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache: dict[int, zstandard.ZstdCompressor] = getattr(_local, "compressors", {})
    if level not in cache:
        cache[level] = zstandard.ZstdCompressor(level=level)
        _local.compressors = cache
    return cache[level]


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def trailer(*parts: bytes | bytearray | memoryview) -> bytes:
    """Plain BLAKE3 of the concatenation of ``parts`` (without making it)."""
    digest = blake3.blake3()
    for part in parts:
        digest.update(part)
    return digest.digest()


def trailer_ok(data: bytes | memoryview) -> bool:
    """True when the plain BLAKE3 trailer matches: the keyless bit-rot check."""
    return len(data) >= TRAILER_SIZE and trailer(data[:-TRAILER_SIZE]) == bytes(
        data[-TRAILER_SIZE:]
    )


# --- chunks -------------------------------------------------------------------------------


def encode_chunk(
    chunk_id: bytes, plaintext: bytes | bytearray | memoryview, keys: Keys, level: int
) -> bytes:
    """The chunk file for ``plaintext``: header, compressed and encrypted body, trailer."""
    compressed = _compressor(level).compress(plaintext)
    compression = COMPRESSION_ZSTD
    body: bytes | bytearray | memoryview = compressed
    if len(compressed) >= len(plaintext):
        compression, body = COMPRESSION_NONE, plaintext
    nonce = os.urandom(12) if keys.encrypted else bytes(12)
    header = CHUNK_HEADER.pack(
        CHUNK_MAGIC, 1, compression, 1 if keys.encrypted else 0, 0, len(plaintext), nonce
    )
    if keys.encrypted:
        body = keys.encrypt(
            nonce, body if isinstance(body, bytes) else bytes(body), chunk_id + header
        )
    hasher = blake3.blake3(header)
    hasher.update(body)
    return b"".join((header, body, hasher.digest()))


def decode_chunk(chunk_id: bytes, data: bytes, keys: Keys, *, name: str = "") -> bytes:
    """The plaintext of a chunk file; :class:`IntegrityError` naming what is wrong."""
    label = name or f"chunk {chunk_id.hex()}"
    if len(data) < CHUNK_HEADER.size + TRAILER_SIZE:
        raise IntegrityError(f"{label} is truncated ({len(data)} bytes).")
    magic, version, compression, encryption, _, length, nonce = CHUNK_HEADER.unpack_from(data)
    if magic != CHUNK_MAGIC:
        raise IntegrityError(f"{label} has no chunk header (bad magic).")
    if not trailer_ok(data):
        raise IntegrityError(f"{label} is damaged: its checksum does not match (bit rot).")
    if version != 1:
        raise FormatError(f"{label} has an unknown chunk format version {version}.")
    if encryption != (1 if keys.encrypted else 0) or compression not in (0, 1):
        raise IntegrityError(f"{label} has an unexpected compression or encryption mode.")
    if length > MAX_CHUNK_PLAINTEXT:
        raise IntegrityError(f"{label} claims an impossible length {length}.")
    header = data[: CHUNK_HEADER.size]
    body: bytes = data[CHUNK_HEADER.size : -TRAILER_SIZE]
    if keys.encrypted:
        try:
            body = keys.decrypt(nonce, body, chunk_id + header)
        except InvalidTag:
            raise IntegrityError(
                f"{label} fails authentication: it was altered or belongs to another chunk."
            ) from None
    if compression == COMPRESSION_ZSTD:
        try:
            plaintext = _decompressor().decompress(body, max_output_size=length)
        except zstandard.ZstdError as e:
            raise IntegrityError(f"{label} does not decompress: {e}.") from None
    else:
        plaintext = body
    if len(plaintext) != length:
        raise IntegrityError(f"{label} has length {len(plaintext)}, its header says {length}.")
    if keys.chunk_id(plaintext) != chunk_id:
        raise IntegrityError(f"{label} holds content that does not match its id.")
    return plaintext


def chunk_header_length(data: bytes) -> int:
    """The plaintext length recorded in a chunk's header (for statistics)."""
    if len(data) < CHUNK_HEADER.size or data[:4] != CHUNK_MAGIC:
        raise FormatError("not a chunk header")
    return int(CHUNK_HEADER.unpack_from(data)[5])


# --- indexes ------------------------------------------------------------------------------


def index_frame(ids: bytes | bytearray, size: int, block_size: int) -> tuple[bytes, bytes]:
    """The header and trailer that go around ``ids`` in an index file. The ids are not
    copied: a 2 TiB image at 1 MiB blocks has 64 MiB of them."""
    count = len(ids) // ID_SIZE
    if count != -(-size // block_size):
        raise ValueError("index length does not match image size")
    header = INDEX_HEADER.pack(INDEX_MAGIC, 1, block_size, size, count)
    return header, trailer(header, ids)


def encode_index(ids: bytes | bytearray, size: int, block_size: int) -> bytes:
    header, tail = index_frame(ids, size, block_size)
    return header + bytes(ids) + tail


def decode_index(data: bytes, *, name: str = "index") -> tuple[int, int, bytes]:
    """``(block size, image size, ids)`` of an index file."""
    if len(data) < INDEX_HEADER.size + TRAILER_SIZE:
        raise FormatError(f"{name} is truncated ({len(data)} bytes).")
    return decode_index_parts(
        data[: INDEX_HEADER.size],
        data[INDEX_HEADER.size : -TRAILER_SIZE],
        data[-TRAILER_SIZE:],
        name=name,
    )


def decode_index_parts(
    header: bytes, ids: bytes, tail: bytes, *, name: str = "index"
) -> tuple[int, int, bytes]:
    """:func:`decode_index` of a file read as header, ids and trailer (no 64 MiB copies)."""
    if len(header) != INDEX_HEADER.size or len(tail) != TRAILER_SIZE:
        raise FormatError(f"{name} is truncated ({len(header) + len(ids) + len(tail)} bytes).")
    magic, version, block_size, size, count = INDEX_HEADER.unpack_from(header)
    if magic != INDEX_MAGIC:
        raise FormatError(f"{name} is not an index (bad magic).")
    if trailer(header, ids) != tail:
        raise IntegrityError(f"{name} is damaged: its checksum does not match.")
    if version != 1:
        raise FormatError(f"{name} has an unknown index format version {version}.")
    if block_size <= 0 or block_size > MAX_CHUNK_PLAINTEXT or block_size % 512:
        raise FormatError(f"{name} has an invalid block size {block_size}.")
    if count != -(-size // block_size):
        raise FormatError(f"{name} has {count} blocks for an image of {size} bytes.")
    if len(ids) != count * ID_SIZE:
        raise FormatError(f"{name} has the wrong length for {count} blocks.")
    return block_size, size, ids


# --- snapshot manifests -------------------------------------------------------------------


def _snap_aad(repo_id: str, snapshot_id: str, header: bytes) -> bytes:
    return SNAP_AAD + repo_id.encode() + snapshot_id.encode() + header


def encode_manifest(manifest: dict[str, Any], keys: Keys, repo_id: str) -> bytes:
    plaintext = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    nonce = os.urandom(12) if keys.encrypted else bytes(12)
    header = SNAP_HEADER.pack(SNAP_MAGIC, 1, 1 if keys.encrypted else 0, nonce)
    body = plaintext
    if keys.encrypted:
        body = keys.encrypt(nonce, plaintext, _snap_aad(repo_id, manifest["id"], header))
    data = header + body
    return data + trailer(data)


def decode_manifest(data: bytes, keys: Keys, repo_id: str, snapshot_id: str) -> dict[str, Any]:
    name = f"snapshot {snapshot_id}"
    if len(data) < SNAP_HEADER.size + TRAILER_SIZE:
        raise FormatError(f"{name}: the manifest is truncated ({len(data)} bytes).")
    magic, version, encryption, nonce = SNAP_HEADER.unpack_from(data)
    if magic != SNAP_MAGIC:
        raise FormatError(f"{name}: the manifest has a bad magic.")
    if not trailer_ok(data):
        raise IntegrityError(f"{name}: the manifest is damaged (checksum mismatch).")
    if version != 1:
        raise FormatError(f"{name}: unknown manifest format version {version}.")
    if encryption != (1 if keys.encrypted else 0):
        raise IntegrityError(
            f"{name}: the manifest's encryption mode does not match the repository."
        )
    header = data[: SNAP_HEADER.size]
    body = data[SNAP_HEADER.size : -TRAILER_SIZE]
    if keys.encrypted:
        try:
            body = keys.decrypt(nonce, body, _snap_aad(repo_id, snapshot_id, header))
        except InvalidTag:
            raise IntegrityError(f"{name}: the manifest fails authentication (altered).") from None
    try:
        manifest: dict[str, Any] = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise FormatError(f"{name}: the manifest is not valid JSON.") from None
    validate_manifest(manifest, name, snapshot_id)
    return manifest


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _require(cond: bool, name: str, what: str) -> None:
    if not cond:
        raise FormatError(f"{name}: the manifest has {what}.")


def validate_manifest(m: Any, name: str, snapshot_id: str) -> None:
    """Check the fields every reader relies on, so later code can index them safely."""
    _require(isinstance(m, dict), name, "no object")
    _require(_is_int(m.get("version")) and m["version"] == 1, name, "an unknown version")
    _require(m.get("id") == snapshot_id, name, "an id that does not match its file name")
    _require(isinstance(m.get("time"), str), name, "no time")
    _require(_is_int(m.get("time_ns", 0)), name, "an invalid time_ns")
    _require(isinstance(m.get("source"), str), name, "no source")
    _require(isinstance(m.get("source_id"), str), name, "no source id")
    _require(m.get("kind") in ("file", "partition", "disk", "journal"), name, "an unknown kind")
    _require(_is_int(m.get("size")), name, "no valid size")
    images = m.get("images")
    _require(isinstance(images, list) and len(images) > 0, name, "no images")
    _require(
        m["kind"] != "journal" or isinstance(m.get("journal"), dict), name, "no journal object"
    )
    seen: set[str] = set()
    for image in images:
        validate_image(image, name, seen)
    try:
        datetime.fromisoformat(m["time"])
    except ValueError:
        raise FormatError(f"{name}: the manifest's time is not ISO 8601.") from None


def validate_image(image: Any, name: str, seen: set[str]) -> None:
    """Check one image of a manifest (:func:`validate_manifest`); ``seen`` holds the names
    of the images before it."""
    _require(isinstance(image, dict), name, "an image that is not an object")
    img_name = image.get("name")
    _require(
        isinstance(img_name, str)
        and 0 < len(img_name) <= 32
        and img_name.replace("_", "").replace("-", "").isalnum()
        and img_name not in seen,
        name,
        "an invalid or repeated image name",
    )
    seen.add(img_name)
    for key in ("offset", "size", "blocks"):
        _require(_is_int(image.get(key)), name, f"an image without a valid {key}")
    _require(
        isinstance(image.get("index_mac"), str) and len(image["index_mac"]) == 64,
        name,
        "an image without an index checksum",
    )
    _require(isinstance(image.get("method", ""), str), name, "an invalid method")
