"""Key slots: passphrases, recovery keys, changes, file modes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from imaging.errors import FormatError, IntegrityError, PassphraseError, UsageError
from imaging.repository import keys
from imaging.repository.store import Repository


def test_wrong_passphrase_is_a_clear_error(repo: Repository) -> None:
    with pytest.raises(PassphraseError, match="Wrong passphrase"):
        Repository.open(repo.path, "not it")


def test_wrong_passphrase_gives_advice(repo: Repository) -> None:
    with pytest.raises(PassphraseError) as caught:
        Repository.open(repo.path, "not it")
    hint = caught.value.hint or ""
    assert "Caps Lock" in hint and "keyboard layout" in hint and "recovery key" in hint


def test_a_wrong_passphrase_derives_once_for_all_passphrase_slots(
    repo: Repository, passphrase: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 22, item 11: a wrong passphrase took one Argon2 derivation per slot (4 s with
    a few slots on slow hardware). Passphrase slots added later share the first one's
    salt, so one derivation tries them all; each still opens with its own passphrase."""
    opened = Repository.open(repo.path, passphrase)
    opened.add_key("second passphrase")
    opened.add_key("third passphrase")
    opened.add_key(keys.new_recovery_key(), kind="recovery")
    derivations: list[bytes] = []
    real = keys._kek

    def counting(secret: str, salt: bytes, params: keys.KdfParams) -> bytes:
        derivations.append(salt)
        return real(secret, salt, params)

    monkeypatch.setattr(keys, "_kek", counting)
    with pytest.raises(PassphraseError):
        Repository.open(repo.path, "not it")
    assert len(derivations) == 1, "one derivation for three passphrase slots"
    for secret in (passphrase, "second passphrase", "third passphrase"):
        derivations.clear()
        assert Repository.open(repo.path, secret).keys.master == opened.keys.master
        assert len(derivations) == 1
    opened.change_key("fourth passphrase")
    derivations.clear()
    with pytest.raises(PassphraseError):
        Repository.open(repo.path, passphrase)
    assert len(derivations) == 1


def test_open_needs_a_passphrase(repo: Repository) -> None:
    with pytest.raises(UsageError, match="passphrase"):
        Repository.open(repo.path, None)


def test_key_files_are_private(repo: Repository) -> None:
    for path in (repo.path / "keys").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((repo.path / "keys").stat().st_mode) == 0o700


def test_recovery_key_opens_and_tolerates_typing(repo: Repository, passphrase: str) -> None:
    opened = Repository.open(repo.path, passphrase)
    key = keys.new_recovery_key()
    opened.add_key(key, kind="recovery")
    typed = key.lower().replace("-", " ")
    again = Repository.open(repo.path, typed)
    assert again.keys.master == opened.keys.master


def test_change_replaces_the_old_passphrase(repo: Repository, passphrase: str) -> None:
    opened = Repository.open(repo.path, passphrase)
    opened.change_key("a new passphrase")
    assert Repository.open(repo.path, "a new passphrase").keys.master == opened.keys.master
    with pytest.raises(PassphraseError):
        Repository.open(repo.path, passphrase)


def test_change_right_after_init_replaces_the_first_passphrase(
    tmp_path: Path, passphrase: str
) -> None:
    """The app changes the passphrase of the repository it has just created, without
    opening it again: the first passphrase stops working there too."""
    made = Repository.init(tmp_path / "new", passphrase=passphrase)
    made.change_key("a new passphrase")
    assert Repository.open(made.path, "a new passphrase").keys.master == made.keys.master
    with pytest.raises(PassphraseError):
        Repository.open(made.path, passphrase)


def test_reached_by_another_path_keeps_keys_and_slot(
    repo: Repository, passphrase: str, tmp_path: Path
) -> None:
    """`at()`: the same repository by another path (its drive mounted again read-write) is
    used with the keys unlocked, and a passphrase change there still replaces the one that
    opened it; another repository at that path is refused."""
    opened = Repository.open(repo.path, passphrase)
    link = tmp_path / "elsewhere"
    link.symlink_to(repo.path)
    moved = opened.at(link)
    assert moved.keys.master == opened.keys.master and moved.id == opened.id
    moved.change_key("a new passphrase")
    with pytest.raises(PassphraseError):
        Repository.open(repo.path, passphrase)
    other = Repository.init(tmp_path / "other", passphrase=passphrase)
    with pytest.raises(UsageError, match="is not the repository that was open"):
        opened.at(other.path)


def test_added_passphrase_keeps_the_first(repo: Repository, passphrase: str) -> None:
    Repository.open(repo.path, passphrase).add_key("second")
    Repository.open(repo.path, "second")
    Repository.open(repo.path, passphrase)


def test_damaged_key_file_is_named(repo: Repository, passphrase: str) -> None:
    (path,) = (repo.path / "keys").iterdir()
    slot = json.loads(path.read_text())
    slot["wrapped"] = slot["wrapped"][:-4] + "AAAA"
    path.write_text(json.dumps(slot))
    with pytest.raises(PassphraseError):
        Repository.open(repo.path, passphrase)
    path.write_text("{not json")
    with pytest.raises(FormatError) as caught:
        Repository.open(repo.path, passphrase)
    assert "damaged" in caught.value.message
    assert f"{path.name}: The key file is not valid JSON." in caught.value.message


def test_a_damaged_key_file_among_others_is_named(repo: Repository, passphrase: str) -> None:
    (first,) = (repo.path / "keys").iterdir()
    Repository.open(repo.path, passphrase).add_key("second")
    first.write_bytes(first.read_bytes()[:-20])  # cut short
    Repository.open(repo.path, "second")  # the intact slot still opens
    with pytest.raises(PassphraseError) as caught:
        Repository.open(repo.path, "neither")
    (other,) = {p.name for p in (repo.path / "keys").iterdir()} - {first.name}
    message = caught.value.message
    assert f"damaged key files: {first.name}: The key file is not valid JSON." in message
    assert other not in message


def test_missing_key_files(repo: Repository, passphrase: str) -> None:
    for path in (repo.path / "keys").iterdir():
        path.unlink()
    # Damage (exit 3), not a wrong passphrase: no passphrase can open a slot that is not there.
    with pytest.raises(IntegrityError, match="no key files"):
        Repository.open(repo.path, passphrase)


def test_hostile_kdf_parameters_are_refused(repo: Repository, passphrase: str) -> None:
    (path,) = (repo.path / "keys").iterdir()
    slot = json.loads(path.read_text())
    slot["kdf"]["memory"] = 2**30
    path.write_text(json.dumps(slot))
    with pytest.raises(FormatError, match="out of range"):
        Repository.open(repo.path, passphrase)


def test_strong_default_kdf() -> None:
    # The conftest lowers the KDF for speed; the shipped default must stay strong.
    default = keys.DEFAULT_PASSPHRASE_KDF
    assert default.memory >= 64 * 1024 and default.passes >= 3  # RFC 9106, second option


def test_recovery_key_format() -> None:
    key = keys.new_recovery_key()
    assert key.startswith("HGRK-")
    assert keys.looks_like_recovery_key(key)
    assert not keys.looks_like_recovery_key("correct horse battery staple")
    assert len(keys.normalise_recovery_key(key)) == 52


def test_passphrase_never_in_repository(tmp_path: Path) -> None:
    Repository.init(tmp_path / "r", passphrase="UNIQUE-PASSPHRASE-MARKER")
    for path in (tmp_path / "r").rglob("*"):
        if path.is_file():
            assert b"UNIQUE-PASSPHRASE-MARKER" not in path.read_bytes()
