"""The master key, its subkeys and the key slots that wrap it (docs/FORMAT.md, "Keys")."""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import blake3
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from imaging.coredumps import forbid_core_dumps
from imaging.errors import MISTYPED_HINT, FormatError, IntegrityError, PassphraseError
from imaging.repository import storage
from imaging.repository.storage import Kind, Name, Store

ENC_CONTEXT = "hourglass 2026-11 chunk and manifest encryption"
ID_CONTEXT = "hourglass 2026-11 chunk id"
MAC_CONTEXT = "hourglass 2026-11 index and manifest mac"
BIND_CONTEXT = "hourglass 2026-11 key slot binding"
SLOT_AAD = b"hourglass-key-slot"  # version 1 slots (repositories of format 1)
SLOT_AAD_V2 = b"hourglass-key-slot-2"
SLOT_VERSION = 2
RECOVERY_PREFIX = "HGRK"


@dataclass(frozen=True)
class KdfParams:
    """Argon2id parameters: memory in KiB, passes, lanes."""

    memory: int
    passes: int = 3
    lanes: int = 4


# RFC 9106's second recommended setting: 64 MiB, 3 passes, 4 lanes (0.11 s here). Tests
# lower this (tests/conftest.py); nothing else may.
DEFAULT_PASSPHRASE_KDF = KdfParams(memory=64 * 1024)
PASSPHRASE_KDF = DEFAULT_PASSPHRASE_KDF
# A recovery key carries 256 bits of entropy: stretching it buys nothing.
RECOVERY_KDF = KdfParams(memory=8 * 1024, passes=1, lanes=1)
# A hostile key file must not make us allocate or spin without bound.
MAX_KDF_MEMORY_KIB = 1024 * 1024
MAX_KDF_PASSES = 16
MAX_KDF_LANES = 16


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
        forbid_core_dumps()  # every master key, however it arrived, passes here
        enc = blake3.blake3(master, derive_key_context=ENC_CONTEXT).digest()
        self._aead = AESGCM(enc)
        self._id_key = blake3.blake3(master, derive_key_context=ID_CONTEXT).digest()
        self._mac_key = blake3.blake3(master, derive_key_context=MAC_CONTEXT).digest()

    def chunk_id(self, data: bytes | bytearray | memoryview) -> bytes:
        """Keyed BLAKE3 of a block's plaintext (plain BLAKE3 without encryption)."""
        if self._id_key is None:
            return blake3.blake3(data, max_threads=1).digest()
        return blake3.blake3(data, key=self._id_key).digest()

    def mac(self, *parts: bytes | bytearray | memoryview) -> bytes:
        """The MAC of the concatenation of ``parts`` (without making it)."""
        digest = blake3.blake3() if self._mac_key is None else blake3.blake3(key=self._mac_key)
        for part in parts:
            digest.update(part)
        return digest.digest()

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
    kdf = Argon2id(
        salt=salt,
        length=32,
        iterations=params.passes,
        lanes=params.lanes,
        memory_cost=params.memory,
    )
    return kdf.derive(secret.encode())


def config_digest(raw: bytes) -> str:
    """The hash of the config file's bytes that version 2 key slots bind (hex)."""
    return blake3.blake3(raw).hexdigest()


def _slot_aad(slot: dict[str, Any], repo_id: str) -> bytes:
    """A slot's associated data. Version 1 binds the repository id that the config names;
    version 2 the id and config hash the slot records, so that a slot opened for a changed
    config tells "the files do not belong together" from "wrong passphrase"."""
    if slot["version"] == 1:
        return SLOT_AAD + repo_id.encode() + str(slot["slot"]).encode()
    fields = (slot["repository"], slot["slot"], slot["config"])
    return SLOT_AAD_V2 + b"".join(b"\n" + str(f).encode() for f in fields)


def _binding_mac(master: bytes, slot: dict[str, Any]) -> str:
    """MAC under the master key of what a version 2 slot records: whoever holds the master
    key (opened through any slot, or handed to a helper process) can check every slot."""
    key = blake3.blake3(master, derive_key_context=BIND_CONTEXT).digest()
    fields = (slot["repository"], slot["slot"], slot["config"])
    return blake3.blake3(b"\n".join(f.encode() for f in fields), key=key).hexdigest()


def make_slot(
    master: bytes,
    secret: str,
    repo_id: str,
    kind: str,
    config_hash: str,
    *,
    share_with: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A key slot wrapping ``master`` with ``secret`` (a passphrase or recovery key), bound to
    the repository id and the hash of its config file (:func:`config_digest`).

    A passphrase slot takes the salt of a passphrase slot in ``share_with`` (the
    repository's slots) with the same parameters: opening then derives once for all of them,
    so a wrong passphrase costs one derivation, not one per slot. That also lets a guess be
    tried against all of them at once, which costs a guesser no less than one slot does."""
    params = RECOVERY_KDF if kind == "recovery" else PASSPHRASE_KDF
    if kind == "recovery":
        secret = normalise_recovery_key(secret)
    salt = os.urandom(32)
    wanted = (params.memory, params.passes, params.lanes)
    for other in share_with or ():
        kdf = other["kdf"]
        if kind == other["kind"] == "passphrase" and (
            (kdf["memory"], kdf["passes"], kdf["lanes"]) == wanted
        ):
            salt = _unb64(kdf["salt"], "salt")
            break
    nonce = os.urandom(12)
    slot: dict[str, Any] = {
        "version": SLOT_VERSION,
        "slot": secrets.token_hex(8),
        "kind": kind,
        "repository": repo_id,
        "config": config_hash,
        "kdf": {
            "name": "argon2id",
            "memory": params.memory,
            "passes": params.passes,
            "lanes": params.lanes,
            "salt": _b64(salt),
        },
        "nonce": _b64(nonce),
    }
    wrapped = AESGCM(_kek(secret, salt, params)).encrypt(nonce, master, _slot_aad(slot, repo_id))
    slot["wrapped"] = _b64(wrapped)
    slot["binding"] = _binding_mac(master, slot)
    return slot


def _is_hex(value: Any, length: int | None = None) -> bool:
    return (
        isinstance(value, str)
        and re.fullmatch("[0-9a-f]+", value) is not None
        and (length is None or len(value) == length)
    )


def parse_slot(raw: bytes) -> dict[str, Any]:
    """Parse and validate a key slot file; :class:`FormatError` for anything malformed."""
    try:
        slot: dict[str, Any] = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise FormatError("The key file is not valid JSON.") from e
    version = slot.get("version") if isinstance(slot, dict) else None
    if type(version) is not int or version not in (1, SLOT_VERSION):
        raise FormatError("The key file has an unknown version.")
    kdf = slot.get("kdf")
    if not isinstance(kdf, dict) or kdf.get("name") != "argon2id":
        raise FormatError("The key file names an unknown key derivation.")
    for name in ("memory", "passes", "lanes"):
        value = kdf.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FormatError(f"The key file's Argon2id parameter {name} is invalid.")
    if (
        kdf["memory"] > MAX_KDF_MEMORY_KIB
        or kdf["memory"] < 8 * kdf["lanes"]
        or kdf["passes"] > MAX_KDF_PASSES
        or kdf["lanes"] > MAX_KDF_LANES
    ):
        raise FormatError("The key file's Argon2id parameters are out of range.")
    if not isinstance(slot.get("slot"), str) or slot.get("kind") not in ("passphrase", "recovery"):
        raise FormatError("The key file has no valid slot name or kind.")
    if len(_unb64(kdf.get("salt"), "salt")) < 16 or len(_unb64(slot.get("nonce"), "nonce")) != 12:
        raise FormatError("The key file's salt or nonce has the wrong length.")
    if len(_unb64(slot.get("wrapped"), "wrapped key")) != 48:
        raise FormatError("The key file's wrapped key has the wrong length.")
    if slot["version"] >= 2 and not (
        _is_hex(slot.get("slot"))
        and _is_hex(slot.get("repository"))
        and _is_hex(slot.get("config"), 64)
        and _is_hex(slot.get("binding"), 64)
    ):
        raise FormatError("The key file has no valid repository id, config hash or binding.")
    return slot


def open_slot(
    slot: dict[str, Any],
    secret: str,
    repo_id: str,
    derived: dict[tuple[str, str, int, int, int], bytes] | None = None,
) -> bytes | None:
    """The master key if ``secret`` opens ``slot``, else ``None``. ``repo_id`` (the id the
    config names) is used by version 1 slots only; version 2 slots carry their own.
    ``derived`` keeps the keys derived so far (by secret, salt and parameters) across the
    slots of one opening."""
    if slot["kind"] == "recovery":
        try:
            secret = normalise_recovery_key(secret)
        except ValueError:
            return None
    kdf = slot["kdf"]
    params = KdfParams(memory=kdf["memory"], passes=kdf["passes"], lanes=kdf["lanes"])
    cache = {} if derived is None else derived
    key = (secret, kdf["salt"], params.memory, params.passes, params.lanes)
    kek = cache.get(key)
    if kek is None:
        kek = cache[key] = _kek(secret, _unb64(kdf["salt"], "salt"), params)
    try:
        return AESGCM(kek).decrypt(
            _unb64(slot["nonce"], "nonce"),
            _unb64(slot["wrapped"], "wrapped key"),
            _slot_aad(slot, repo_id),
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


def write_slot(store: Store, slot: dict[str, Any]) -> Name:
    name = storage.key_slot(slot["slot"])
    store.put(name, json.dumps(slot, indent=1).encode() + b"\n")
    return name


def _file_name(name: Name) -> str:
    return PurePosixPath(storage.object_key(name)).name


def read_slots(store: Store) -> tuple[list[tuple[Name, dict[str, Any]]], list[str]]:
    """The parsed slots of the store's key files and a description of each damaged one."""
    slots: list[tuple[Name, dict[str, Any]]] = []
    damaged: list[str] = []
    try:
        names = sorted(info.name for info in store.list(Kind.KEYS))
    except FileNotFoundError:
        names = []
    for name in names:
        try:
            slots.append((name, parse_slot(store.get(name))))
        except FormatError as e:
            damaged.append(f"{_file_name(name)}: {e.message}")
        except OSError as e:
            damaged.append(f"{_file_name(name)}: {e.strerror}")
    return slots, damaged


def unlock(store: Store, secret: str, repo_id: str, config_hash: str) -> tuple[bytes, str]:
    """Try every slot; return the master key and the slot that opened it.

    :class:`PassphraseError` when ``secret`` opens no slot; :class:`IntegrityError` when
    there are no key files, or when a slot opens but the key files and the config do not
    belong together (:func:`check_bindings`).
    """
    slots, damaged = read_slots(store)
    if not slots and not damaged:
        raise IntegrityError(
            "The repository's config says it is encrypted, but "
            f"{store.describe(Kind.KEYS)} holds no key files.",
            "The key files were deleted or the config was altered; without a key file the "
            "backups cannot be decrypted. Restore keys/ from a copy of the drive.",
        )
    # Slots that record this config first (a key file copied in from another repository
    # is then named as such); recovery slots first when the secret looks like a recovery
    # key: they are fast.
    recovery_first = looks_like_recovery_key(secret)

    def order(ps: tuple[Name, dict[str, Any]]) -> tuple[bool, bool]:
        slot = ps[1]
        foreign = slot["version"] >= 2 and (slot["repository"], slot["config"]) != (
            repo_id,
            config_hash,
        )
        recovery = slot["kind"] == "recovery"
        return foreign, (not recovery) if recovery_first else recovery

    slots.sort(key=order)
    derived: dict[tuple[str, str, int, int, int], bytes] = {}
    for _, slot in slots:
        master = open_slot(slot, secret, repo_id, derived)
        if master is not None:
            if len(master) != 32:
                raise FormatError(f"Key slot {slot['slot']} holds a master key of the wrong size.")
            check_bindings(store, master, repo_id, config_hash)
            return master, slot["slot"]
    if damaged and not slots:
        raise FormatError("Every key file is damaged: " + "; ".join(damaged))
    detail = f" (damaged key files: {'; '.join(damaged)})" if damaged else ""
    foreign = [
        _file_name(name)
        for name, slot in slots
        if slot["version"] >= 2 and (slot["repository"], slot["config"]) != (repo_id, config_hash)
    ]
    hint = MISTYPED_HINT
    if foreign:
        hint += (
            f" Also, {', '.join(foreign)} {'records' if len(foreign) == 1 else 'record'} a "
            "different repository id or config than "
            "the config file holds: if the passphrase is right, the config was replaced or edited."
        )
    raise PassphraseError(
        f"Wrong passphrase: it opens none of the repository's keys{detail}.", hint
    )


def check_bindings(store: Store, master: bytes, repo_id: str, config_hash: str) -> int:
    """Check every version 2 slot against the config; returns how many were checked.

    A slot's record is authenticated by its binding MAC under the master key: a config
    edited or copied from another repository since the slot was made, or a key file from
    another repository, is refused as tampering (:class:`IntegrityError`, naming the file).
    Version 1 slots (repositories made before format 2) record nothing to check.
    """
    slots, _ = read_slots(store)
    checked = 0
    config = store.describe(storage.CONFIG)
    for slot_name, slot in slots:
        if slot["version"] < 2:
            continue
        name = storage.object_key(slot_name)
        if not secrets.compare_digest(slot["binding"], _binding_mac(master, slot)):
            raise IntegrityError(
                f"The key file {name} does not belong to this repository: it was altered or "
                "copied in from another repository.",
                "Remove it if you did not add it yourself; the repository's files have been "
                "tampered with.",
            )
        if slot["repository"] != repo_id:
            raise IntegrityError(
                f"The repository's files do not belong together: {config} names repository "
                f"{repo_id}, but {name} was made for repository {slot['repository']}.",
                "The config was edited or copied in from another repository; put the original "
                "config back (from a copy of the drive).",
            )
        if slot["config"] != config_hash:
            raise IntegrityError(
                f"{config} was altered: it is not the config that {name} was made for "
                "(its hash does not match).",
                "Hourglass never rewrites the config; put the original back (from a copy "
                "of the drive). The repository's files have been tampered with.",
            )
        checked += 1
    return checked
