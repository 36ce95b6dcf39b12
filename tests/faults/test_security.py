"""The passphrase stays out of argv, child environments and output; nonces never repeat."""

from __future__ import annotations

import argparse
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.image.backup import backup_path
from imaging.process import child_environment, run
from imaging.repository import codec
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import MiB, run_cli, write_random_image

pytestmark = pytest.mark.faults

SECRET = "s3cret-Passphrase-That-Must-Not-Leak"


def test_children_never_inherit_the_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", SECRET)
    assert "HOURGLASS_PASSPHRASE" not in child_environment()
    out = run(["env"]).stdout.decode()
    assert SECRET not in out


# A stand-in for a program the CLI runs: it records the environment it was started with
# (the kernel's copy in /proc, which nothing in the child can have edited yet), then runs the
# real program so the command goes on as usual.
WRAPPER = """#!/bin/sh
tr '\\0' '\\n' < /proc/$$/environ > "$ENV_DUMPS/$(basename "$0").$$"
exec {real} "$@"
"""


def test_a_child_the_cli_runs_starts_without_the_passphrase(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repository.init(repo, passphrase=SECRET)
    source = tmp_path / "s.img"
    write_random_image(source, 8 * MiB)
    wrappers = tmp_path / "bin"
    dumps = tmp_path / "dumps"
    wrappers.mkdir()
    dumps.mkdir()
    real = shutil.which("blkid") or shutil.which("blkid", path="/usr/sbin:/sbin")
    assert real is not None, "blkid (util-linux) is needed"
    wrapper = wrappers / "blkid"
    wrapper.write_text(WRAPPER.format(real=real))
    wrapper.chmod(0o755)
    result = subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", "backup", "--repo", str(repo), str(source)],
        env={
            **os.environ,
            "HOURGLASS_PASSPHRASE": SECRET,
            "PATH": f"{wrappers}:{os.environ['PATH']}",
            "ENV_DUMPS": str(dumps),
        },
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    started = sorted(dumps.iterdir())
    assert started, "the backup ran no blkid: this test checks nothing"
    for dump in started:
        env = dump.read_text().splitlines()
        assert f"ENV_DUMPS={dumps}" in env  # the dump is this child's own environment
        assert not any(line.startswith("HOURGLASS_PASSPHRASE=") for line in env), dump.name
        assert SECRET not in dump.read_text(), dump.name
    assert SECRET not in result.stdout + result.stderr


def test_wrong_passphrase_output_does_not_echo_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repository.init(repo, passphrase=PASSPHRASE)
    result = subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", "snapshots", "--repo", str(repo), "--debug"],
        env={**os.environ, "HOURGLASS_PASSPHRASE": SECRET},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 4
    assert SECRET not in result.stdout + result.stderr
    for path in repo.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


SECRET_WORDS = ("pass", "secret", "key", "password")


def _every_command(
    parser: argparse.ArgumentParser, name: str = "hourglass"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """``parser`` and every subcommand and sub-subcommand under it, with their names."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _every_command(sub, f"{name} {sub_name}")


def _takes_a_secret_value(action: argparse.Action) -> bool:
    """An option or argument named like a secret that takes a value (not a flag, not a file)."""
    if action.nargs == 0:
        return False  # a flag: --keyless, --recovery
    names = action.option_strings or [action.dest]
    for name in names:
        words = name.lstrip("-").replace("_", "-").split("-")
        if any(w.startswith(SECRET_WORDS) for w in words) and words[-1] != "file":
            return True
    return False


def test_no_command_takes_a_passphrase_value() -> None:
    from imaging.cli.main import build_parser

    commands = dict(_every_command(build_parser()))
    # the walk reaches sub-subcommands and the app's command, not only the top level
    assert {"hourglass backup", "hourglass key", "hourglass files restore", "hourglass ui"} <= set(
        commands
    )
    offenders = [
        f"{name}: {'/'.join(action.option_strings) or action.dest}"
        for name, parser in commands.items()
        for action in parser._actions
        if _takes_a_secret_value(action)
    ]
    assert offenders == []
    files = [
        name
        for name, parser in commands.items()
        if any("--passphrase-file" in a.option_strings for a in parser._actions)
    ]
    assert "hourglass backup" in files and "hourglass key" in files


def test_every_key_file_is_private(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """init, `key add`, `key add --recovery` and `key change` all write 0600 slots, even
    under a umask that would let others read a file made with a careless mode."""
    repo = tmp_path / "repo"
    keys_dir = repo / "keys"
    new = tmp_path / "new"
    new.write_text("another passphrase\n")
    seen: set[str] = set()
    old = os.umask(0)
    try:
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("init", str(repo)) == 0
        steps = [
            ("key", "add", "--new-passphrase-file", str(new)),
            ("key", "add", "--recovery"),
            ("key", "change", "--new-passphrase-file", str(new)),
        ]
        for step in steps:
            monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
            assert run_cli(*step, "--repo", str(repo)) == 0, step
            for path in keys_dir.iterdir():
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, (step, path.name)
                seen.add(path.name)
    finally:
        os.umask(old)
    assert len(seen) == 4  # init's slot and one new slot per step
    assert stat.S_IMODE(keys_dir.stat().st_mode) == 0o700


def test_nonces_never_repeat(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "s.img"
    write_random_image(source, 200 * MiB, zero_every=0)
    backup_path(repo, source)
    for _ in range(3):
        backup_path(repo, source)  # manifests under the same key too
    nonces = []
    for entry in repo.iter_chunk_files():
        with open(entry.path, "rb") as f:
            nonces.append(f.read(codec.CHUNK_HEADER.size)[12:24])
    for path in (repo.path / "snapshots").iterdir():
        nonces.append(path.read_bytes()[8:20])
    assert len(nonces) > 40
    assert len(set(nonces)) == len(nonces)
