"""The master key, its subkeys and the key slots that wrap it (docs/FORMAT.md, "Keys")."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from imaging.errors import FormatError, PassphraseError
from imaging.repository.fsutil import write_atomic

ENC_CONTEXT = "hourglass 2026-11 chunk and manifest encryption"
ID_CONTEXT = "hourglass 2026-11 chunk id"
MAC_CONTEXT = "hourglass 2026-11 index and manifest mac"
SLOT_AAD = b"hourglass-key-slot"
RECOVERY_PREFIX = "HGRK"


@dataclass(frozen=True)
class KdfParams:
    n: int
    r: int = 8
    p: int = 1


# 128 MiB and about half a second here. Tests lower this (tests/conftest.py); nothing else may.
PASSPHRASE_KDF = KdfParams(n=2**17)
# A recovery key carries 256 bits of entropy: stretching it buys nothing.
RECOVERY_KDF = KdfParams(n=2**14)


class Keys:
    """Subkeys derived from the master key; ``None`` master means no encryption."""

    def __init__(self, master: bytes | None) -> None:
        self.master = master
        self.encrypted = master is not None
        if master is None:
            self._aead: AESGCM | None = None
            self._id_key: bytes | None = None
            self._mac_key: bytes | None = None
            return
        enc = blake3.blake3(master, derive_key_context=ENC_CONTEXT).digest()
        self._aead = AESGCM(enc)
        self._id_key = blake3.blake3(master, derive_key_context=ID_CONTEXT).digest()
        self._mac_key = blake3.blake3(master, derive_key_context=MAC_CONTEXT).digest()

    def chunk_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """Keyed BLAKE3 of a block's plaintext (plain BLAKE3 without encryption)."""
        if self._id_key is None:
            return blake3.blake3(data, max_threads=1).digest()
        return blake3.blake3(data, key=self._id_key).digest()

    def mac(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._mac_key is None:
            return blake3.blake3(data).digest()
        return blake3.blake3(data, key=self._mac_key).digest()

    def encrypt(self, nonce: bytes, plaintext: bytes | memoryview, aad: bytes) -> bytes:
        assert self._aead is not None
        return self._aead.encrypt(nonce, plaintext, aad)

    def decrypt(self, nonce: bytes, ciphertext: bytes | memoryview, aad: bytes) -> bytes:
        """Decrypt and authenticate; raises ``InvalidTag`` for the caller to name the damage."""
        assert self._aead is not None
        return self._aead.decrypt(nonce, ciphertext, aad)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise FormatError(f"{what} is not a base64 string.")
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:
        raise FormatError(f"{what} is not valid base64.") from e


def _kek(secret: str, salt: bytes, params: KdfParams) -> bytes:
    return hashlib.scrypt(
        secret.encode(),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=256 * 1024 * 1024 + 128 * params.n * params.r * params.p,
        dklen=32,
    )


def _slot_aad(repo_id: str, slot: str) -> bytes:
    return SLOT_AAD + repo_id.encode() + slot.encode()


def make_slot(master: bytes, secret: str, repo_id: str, kind: str) -> dict[str, Any]:
    """A key slot wrapping ``master`` with ``secret`` (a passphrase or recovery key)."""
    params = RECOVERY_KDF if kind == "recovery" else PASSPHRASE_KDF
    if kind == "recovery":
        secret = normalise_recovery_key(secret)
    slot = secrets.token_hex(8)
    salt = os.urandom(32)
    nonce = os.urandom(12)
    wrapped = AESGCM(_kek(secret, salt, params)).encrypt(nonce, master, _slot_aad(repo_id, slot))
    return {
        "version": 1,
        "slot": slot,
        "kind": kind,
        "kdf": {"name": "scrypt", "n": params.n, "r": params.r, "p": params.p, "salt": _b64(salt)},
        "nonce": _b64(nonce),
        "wrapped": _b64(wrapped),
    }


def parse_slot(raw: bytes) -> dict[str, Any]:
    """Parse and validate a key slot file; :class:`FormatError` for anything malformed."""
    try:
        slot = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise FormatError("The key file is not valid JSON.") from e
    if not isinstance(slot, dict) or slot.get("version") != 1:
        raise FormatError("The key file has an unknown version.")
    kdf = slot.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "scrypt":
        raise FormatError("The key file names an unknown key derivation.")
    for name in ("n", "r", "p"):
        value = kdf.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FormatError(f"The key file's scrypt parameter {name} is invalid.")
    n = kdf["n"]
    if n & (n - 1) or n < 2 or n > 2**22 or kdf["r"] > 32 or kdf["p"] > 16:
        raise FormatError("The key file's scrypt parameters are out of range.")
    if not isinstance(slot.get("slot"), str) or slot.get("kind") not in ("passphrase", "recovery"):
        raise FormatError("The key file has no valid slot name or kind.")
    if len(_unb64(kdf.get("salt"), "salt")) < 16 or len(_unb64(slot.get("nonce"), "nonce")) != 12:
        raise FormatError("The key file's salt or nonce has the wrong length.")
    if len(_unb64(slot.get("wrapped"), "wrapped key")) != 48:
        raise FormatError("The key file's wrapped key has the wrong length.")
    return slot


def open_slot(slot: dict[str, Any], secret: str, repo_id: str) -> bytes | None:
    """The master key if ``secret`` opens ``slot``, else ``None``."""
    if slot["kind"] == "recovery":
        try:
            secret = normalise_recovery_key(secret)
        except ValueError:
            return None
    kdf = slot["kdf"]
    params = KdfParams(n=kdf["n"], r=kdf["r"], p=kdf["p"])
    kek = _kek(secret, _unb64(kdf["salt"], "salt"), params)
    try:
        return AESGCM(kek).decrypt(
            _unb64(slot["nonce"], "nonce"),
            _unb64(slot["wrapped"], "wrapped key"),
            _slot_aad(repo_id, slot["slot"]),
        )
    except InvalidTag:
        return None


def new_recovery_key() -> str:
    """A printable recovery key: 256 random bits in groups of base32."""
    text = base64.b32encode(os.urandom(32)).decode().rstrip("=")
    groups = [text[i : i + 4] for i in range(0, len(text), 4)]
    return "-".join([RECOVERY_PREFIX, *groups])


def normalise_recovery_key(text: str) -> str:
    """Accept a recovery key typed with any case, spaces or dashes."""
    compact = "".join(ch for ch in text.upper() if ch.isalnum())
    if compact.startswith(RECOVERY_PREFIX):
        compact = compact[len(RECOVERY_PREFIX) :]
    if len(compact) != 52:
        raise ValueError("not a recovery key")
    try:
        base64.b32decode(compact + "====")
    except ValueError as e:
        raise ValueError("not a recovery key") from e
    return compact


def looks_like_recovery_key(text: str) -> bool:
    try:
        normalise_recovery_key(text)
    except ValueError:
        return False
    return True


def write_slot(keys_dir: Path, slot: dict[str, Any]) -> Path:
    path = keys_dir / f"{slot['slot']}.key"
    write_atomic(path, json.dumps(slot, indent=1).encode() + b"\n", mode=0o600)
    return path


def unlock(keys_dir: Path, secret: str, repo_id: str) -> tuple[bytes, str]:
    """Try every slot; return the master key and the slot that opened it."""
    paths = sorted(keys_dir.glob("*.key"))
    if not paths:
        raise PassphraseError(
            f"The repository has no key files in {keys_dir}.",
            "Without a key file the backups cannot be decrypted.",
        )
    damaged: list[str] = []
    # Recovery slots first when the secret looks like a recovery key: they are fast.
    recovery_first = looks_like_recovery_key(secret)
    slots = []
    for path in paths:
        try:
            slots.append(parse_slot(path.read_bytes()))
        except FormatError as e:
            damaged.append(f"{path.name}: {e.message}")
    slots.sort(
        key=lambda s: (s["kind"] != "recovery") if recovery_first else (s["kind"] == "recovery")
    )
    for slot in slots:
        master = open_slot(slot, secret, repo_id)
        if master is not None:
            if len(master) != 32:
                raise FormatError(f"Key slot {slot['slot']} holds a master key of the wrong size.")
            return master, slot["slot"]
    if damaged and not slots:
        raise FormatError("Every key file is damaged: " + "; ".join(damaged))
    detail = f" (damaged key files: {'; '.join(damaged)})" if damaged else ""
    raise PassphraseError(f"Wrong passphrase: it opens none of the repository's keys{detail}.")
