"""Named build steps that announce themselves, time themselves and skip when unchanged.

A step's key is a hash of its inputs (files, directories, strings and the keys of the steps
it builds on). When the key matches the stamp of the last run and the outputs are still there,
the step is skipped. A step also runs when a step it builds on ran in this build. A step
that changes an earlier step's output in place (``consumes``) and has to run while that
earlier step was skipped runs the earlier step again first, so it always starts from a clean
state (configure_root starts from a fresh install_app root, never from its own old output).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from build.context import Context

log = logging.getLogger("build")


@dataclass(frozen=True)
class After:
    """An input that is the key of an earlier step."""

    step: str


Input = Path | str | After
StepFunction = Callable[[Context], None]
# The undecorated step functions by name, for re-running a consumed step.
REGISTRY: dict[str, StepFunction] = {}


def digest_path(path: Path, h: hashlib._Hash) -> None:
    """Content, names, modes and symlink targets of a file or tree (never mtimes)."""
    if not path.exists() and not path.is_symlink():
        h.update(f"missing:{path.name}\0".encode())
        return
    entries = [path] if not path.is_dir() else [path, *sorted(path.rglob("*"))]
    for entry in entries:
        relative = entry.relative_to(path).as_posix() if entry != path else "."
        if "__pycache__" in entry.parts:
            continue
        mode = entry.lstat().st_mode
        h.update(f"{relative}\0{mode:o}\0".encode())
        if entry.is_symlink():
            h.update(os.readlink(entry).encode())
        elif entry.is_file():
            with entry.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)


def key_of(ctx: Context, name: str, inputs: Iterable[Input]) -> str:
    h = hashlib.sha256(name.encode())
    for item in inputs:
        if isinstance(item, After):
            h.update(f"after:{item.step}={ctx.keys[item.step]}\0".encode())
        elif isinstance(item, Path):
            h.update(f"path:{item.name}\0".encode())
            digest_path(item, h)
        else:
            h.update(f"value:{item}\0".encode())
    return h.hexdigest()[:24]


def step(
    inputs: Callable[[Context], Iterable[Input]],
    outputs: Callable[[Context], Iterable[Path]] = lambda ctx: (),
    consumes: str | None = None,
    keyed_outputs: bool = False,
) -> Callable[[StepFunction], StepFunction]:
    """Make ``function`` a named, timed, skippable build step.

    ``keyed_outputs``: the outputs' names contain the key (a cache), so they alone say the
    step is done; a failed run with other inputs then never costs the cached result.
    """

    def decorate(function: StepFunction) -> StepFunction:
        name = function.__name__

        @functools.wraps(function)
        def wrapper(ctx: Context) -> None:
            items = list(inputs(ctx))
            key = key_of(ctx, name, items)
            ctx.keys[name] = key
            stamp = ctx.stamps / name
            upstream_ran = any(isinstance(i, After) and i.step in ctx.ran for i in items)
            done = all(p.exists() for p in outputs(ctx))
            fresh = (
                name not in ctx.forced
                and not upstream_ran
                and done
                and (keyed_outputs or (stamp.exists() and stamp.read_text() == key))
            )
            if fresh:
                log.info("==> %s: skipped (inputs unchanged)", name)
                return
            if consumes and consumes not in ctx.ran:
                log.info("==> %s: again, as %s changes its output in place", consumes, name)
                REGISTRY[consumes](ctx)
                ctx.ran.add(consumes)
            log.info("==> %s", name)
            started = time.monotonic()
            if not keyed_outputs:
                stamp.unlink(missing_ok=True)
            function(ctx)
            ctx.ran.add(name)
            ctx.stamps.mkdir(parents=True, exist_ok=True)
            stamp.write_text(key)
            log.info("<== %s: done in %.1f s", name, time.monotonic() - started)

        REGISTRY[name] = function
        return wrapper

    return decorate


def run_steps(ctx: Context, until: str | None, steps: Iterable[StepFunction]) -> None:
    """Run ``steps`` in order, stopping after the one named ``until``."""
    for s in steps:
        s(ctx)
        if until is not None and s.__name__ == until:
            return
