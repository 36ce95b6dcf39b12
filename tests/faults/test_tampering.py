"""Someone who can write to the backup drive edits `config`, mixes in another repository's
files or rolls the snapshots back (issue 14, items 3, 11 and 13; docs/SECURITY.md).

Every attack is made with real repositories and the real CLI (in-process), and the honest
repository it started from still restores.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from imaging.errors import IntegrityError, PassphraseError
from imaging.repository import keys
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import MiB, run_cli, write_random_image

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
# The last commit whose repositories are format 1 (version 1 key slots, config not bound).
FORMAT_1_COMMIT = "175ddeb"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "passphrase"
    path.write_text(PASSPHRASE + "\n")
    return path


def cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """Run the CLI in-process; (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = run_cli(*[str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def make_pair(tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An encrypted repository `enc` of `honest.img` and an unencrypted `plain` of `evil.img`."""
    write_random_image(tmp_path / "honest.img", 12 * MiB, seed=1)
    write_random_image(tmp_path / "evil.img", 12 * MiB, seed=2)
    pf = ("--passphrase-file", secret_file)
    assert cli(capsys, "init", tmp_path / "enc", *pf)[0] == 0
    assert cli(capsys, "backup", "--repo", tmp_path / "enc", tmp_path / "honest.img", *pf)[0] == 0
    assert cli(capsys, "init", tmp_path / "plain", "--encryption", "none")[0] == 0
    assert cli(capsys, "backup", "--repo", tmp_path / "plain", tmp_path / "evil.img")[0] == 0


def downgrade(victim: Path, donor: Path) -> None:
    """Item 3's attack: config says `none`, the donor's snapshots, indexes and chunks in."""
    config = json.loads((victim / "config").read_text())
    config["encryption"] = "none"
    (victim / "config").write_text(json.dumps(config, indent=1) + "\n")
    for sub in ("snapshots", "indexes"):
        shutil.rmtree(victim / sub)
        shutil.copytree(donor / sub, victim / sub)
    shutil.copytree(donor / "chunks", victim / "chunks", dirs_exist_ok=True)


def test_encryption_downgrade_is_refused(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_pair(tmp_path, secret_file, capsys)
    attacked = tmp_path / "attacked"
    shutil.copytree(tmp_path / "enc", attacked)
    downgrade(attacked, tmp_path / "plain")
    pf = ("--passphrase-file", secret_file)
    out_img = tmp_path / "restored.img"

    code, _, err = cli(capsys, "restore", "--yes", "--repo", attacked, "latest", out_img, *pf)
    assert code == 3, err
    assert "config" in err and "keys" in err and "not encrypted" in err
    assert not out_img.exists() or out_img.read_bytes() != (tmp_path / "evil.img").read_bytes()
    for argv in (("verify", "--read-data"), ("snapshots",), ("info",)):
        code, _, err = cli(capsys, *argv, "--repo", attacked, *pf)
        assert code == 3, (argv, err)
        assert "config" in err, (argv, err)
    # The helper process (mount's FUSE server) refuses it as well.
    with pytest.raises(IntegrityError, match="not encrypted"):
        Repository.open_with_master(attacked, None)

    # The honest repository the attack was copied from still restores, verified.
    code, out, err = cli(
        capsys, "restore", "--yes", "--repo", tmp_path / "enc", "latest", out_img, *pf
    )
    assert code == 0, err
    assert "verified" in out
    assert out_img.read_bytes() == (tmp_path / "honest.img").read_bytes()


def test_downgrade_with_the_keys_removed_is_caught_by_this_machine(
    tmp_path: Path,
    secret_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without keys/ the drive alone cannot tell: only what this machine remembers can.
    monkeypatch.setenv("HOURGLASS_STATE_DIR", str(tmp_path / "state"))
    make_pair(tmp_path, secret_file, capsys)
    downgrade(tmp_path / "enc", tmp_path / "plain")
    shutil.rmtree(tmp_path / "enc" / "keys")
    code, _, err = cli(
        capsys, "restore", "--yes", "--repo", tmp_path / "enc", "latest", tmp_path / "x.img"
    )
    assert code == 3, err
    assert "config" in err and "with its keys before" in err
    assert not (tmp_path / "x.img").exists()


def test_keys_missing_from_an_encrypted_repository_is_damage(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_pair(tmp_path, secret_file, capsys)
    shutil.rmtree(tmp_path / "enc" / "keys")
    code, _, err = cli(
        capsys, "snapshots", "--repo", tmp_path / "enc", "--passphrase-file", secret_file
    )
    assert code == 3, err
    assert "no key files" in err and "keys" in err


@pytest.mark.parametrize(
    "edit",
    [
        pytest.param(lambda c: {**c, "compression_level": 19}, id="compression-level"),
        pytest.param(lambda c: {**c, "block_size": 4 * MiB}, id="block-size"),
        pytest.param(lambda c: {**c, "created": "2020-01-01T00:00:00+00:00"}, id="created"),
        pytest.param(lambda c: {**c, "format": 1}, id="format"),
    ],
)
def test_edited_config_is_refused_as_tampered(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str], edit: object
) -> None:
    make_pair(tmp_path, secret_file, capsys)
    config_path = tmp_path / "enc" / "config"
    original = config_path.read_bytes()
    config_path.write_text(json.dumps(edit(json.loads(original)), indent=1) + "\n")  # type: ignore[operator]
    code, _, err = cli(
        capsys, "snapshots", "--repo", tmp_path / "enc", "--passphrase-file", secret_file
    )
    assert code == 3, err
    assert f"{config_path} was altered" in err
    # A wrong passphrase is still a wrong passphrase (exit 4), with a note about the config.
    (tmp_path / "wrong").write_text("not the passphrase\n")
    code, _, err = cli(
        capsys, "snapshots", "--repo", tmp_path / "enc", "--passphrase-file", tmp_path / "wrong"
    )
    assert code == 4, err
    assert "Wrong passphrase" in err and "config" in err
    config_path.write_bytes(original)
    assert (
        cli(capsys, "snapshots", "--repo", tmp_path / "enc", "--passphrase-file", secret_file)[0]
        == 0
    )


def test_config_whitespace_edit_is_tampering(repo: Repository, passphrase: str) -> None:
    config_path = repo.path / "config"
    config_path.write_bytes(config_path.read_bytes().replace(b"\n", b"\r\n"))
    with pytest.raises(IntegrityError, match="was altered"):
        Repository.open(repo.path, passphrase)


def test_edited_config_id_says_the_files_do_not_belong_together(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_pair(tmp_path, secret_file, capsys)
    config_path = tmp_path / "enc" / "config"
    config = json.loads(config_path.read_text())
    real_id = config["id"]
    config["id"] = "0" * 32
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    code, _, err = cli(
        capsys, "snapshots", "--repo", tmp_path / "enc", "--passphrase-file", secret_file
    )
    assert code == 3, err
    assert "do not belong together" in err and real_id in err and "0" * 32 in err
    assert "Wrong passphrase" not in err


def test_config_of_another_repository_copied_in(
    tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_pair(tmp_path, secret_file, capsys)
    other = tmp_path / "other"
    assert cli(capsys, "init", other, "--passphrase-file", secret_file)[0] == 0
    shutil.copy(other / "config", tmp_path / "enc" / "config")
    pf = ("--passphrase-file", secret_file)
    code, _, err = cli(
        capsys, "restore", "--yes", "--repo", tmp_path / "enc", "latest", tmp_path / "x.img", *pf
    )
    assert code == 3, err
    assert "do not belong together" in err
    assert not (tmp_path / "x.img").exists()
    # A key file copied in from another repository: likewise, naming the file.
    (foreign,) = (other / "keys").iterdir()
    victim = tmp_path / "victim"
    Repository.init(victim, passphrase=PASSPHRASE)
    shutil.copy(foreign, victim / "keys" / foreign.name)
    with pytest.raises(IntegrityError, match=f"keys/{foreign.name} does not belong"):
        Repository.open(victim, PASSPHRASE)


def test_wrong_passphrase_on_intact_repository_is_still_exit_4(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    Repository.init(tmp_path / "r", passphrase=PASSPHRASE)
    (tmp_path / "wrong").write_text("nope\n")
    code, _, err = cli(
        capsys, "snapshots", "--repo", tmp_path / "r", "--passphrase-file", tmp_path / "wrong"
    )
    assert code == 4
    assert "Wrong passphrase" in err and "config" not in err


def test_helper_process_rechecks_the_config(repo: Repository, passphrase: str) -> None:
    master = Repository.open(repo.path, passphrase).keys.master
    assert Repository.open_with_master(repo.path, master).id == repo.id
    config_path = repo.path / "config"
    config = json.loads(config_path.read_text())
    config["compression_level"] = 5
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    with pytest.raises(IntegrityError, match="was altered"):
        Repository.open_with_master(repo.path, master)


def test_new_slots_bind_the_config(repo: Repository, passphrase: str) -> None:
    opened = Repository.open(repo.path, passphrase)
    opened.add_key(keys.new_recovery_key(), kind="recovery")
    opened.change_key("another passphrase")
    digest = keys.config_digest((repo.path / "config").read_bytes())
    for path in (repo.path / "keys").iterdir():
        slot = json.loads(path.read_text())
        assert slot["version"] == 2
        assert (slot["repository"], slot["config"]) == (repo.id, digest)
    assert json.loads((repo.path / "config").read_text())["format"] == 2


# --- repositories made before format 2 -------------------------------------------------------


@pytest.fixture
def format_1_repo(tmp_path: Path) -> Path:
    """A repository made and backed up by the Hourglass of FORMAT_1_COMMIT (real old code)."""
    old = tmp_path / "old-hourglass"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", FORMAT_1_COMMIT, "imaging"],
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        pytest.skip(f"needs the git history of this checkout ({FORMAT_1_COMMIT})")
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    repo = tmp_path / "old-repo"
    source = tmp_path / "old.img"
    write_random_image(source, 8 * MiB, seed=3)
    env = {**os.environ, "PYTHONPATH": str(old), "HOURGLASS_PASSPHRASE": PASSPHRASE}
    for argv in (["init", str(repo)], ["backup", "--repo", str(repo), str(source)]):
        subprocess.run(
            [sys.executable, "-m", "imaging.cli.main", *argv],
            env=env,
            cwd=old,  # not this checkout: `-m` puts the working directory first
            check=True,
            capture_output=True,
        )
    assert json.loads((repo / "config").read_text())["format"] == 1
    return repo


def test_format_1_repository_opens_and_restores(
    format_1_repo: Path, tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (slot_file,) = (format_1_repo / "keys").iterdir()
    assert json.loads(slot_file.read_text())["version"] == 1
    out_img = tmp_path / "out.img"
    pf = ("--passphrase-file", secret_file)
    code, _, err = cli(capsys, "restore", "--yes", "--repo", format_1_repo, "latest", out_img, *pf)
    assert code == 0, err
    assert out_img.read_bytes() == (tmp_path / "old.img").read_bytes()
    assert cli(capsys, "verify", "--read-data", "--repo", format_1_repo, *pf)[0] == 0


def test_format_1_repository_is_never_read_as_unencrypted(
    format_1_repo: Path, tmp_path: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = tmp_path / "plain"
    write_random_image(tmp_path / "evil.img", 8 * MiB, seed=2)
    assert cli(capsys, "init", plain, "--encryption", "none")[0] == 0
    assert cli(capsys, "backup", "--repo", plain, tmp_path / "evil.img")[0] == 0
    downgrade(format_1_repo, plain)
    code, _, err = cli(
        capsys, "restore", "--yes", "--repo", format_1_repo, "latest", tmp_path / "x.img"
    )
    assert code == 3, err
    assert "not encrypted" in err and "keys" in err


def test_format_1_repository_with_a_new_slot_is_bound(
    format_1_repo: Path, secret_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # `key add` (or `key change`) on an old repository writes a version 2 slot; from then
    # on a changed config is caught whichever slot opens the repository.
    Repository.open(format_1_repo, PASSPHRASE).add_key("a second passphrase")
    config_path = format_1_repo / "config"
    config = json.loads(config_path.read_text())
    config["compression_level"] = 19
    config_path.write_text(json.dumps(config, indent=1) + "\n")
    with pytest.raises(IntegrityError, match="was altered"):
        Repository.open(format_1_repo, PASSPHRASE)  # opened by the old version 1 slot
    with pytest.raises(IntegrityError, match="was altered"):
        Repository.open(format_1_repo, "a second passphrase")
    with pytest.raises(PassphraseError):
        Repository.open(format_1_repo, "neither")
