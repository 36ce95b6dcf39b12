"""Step skipping: a step runs when its inputs change, or when a step it builds on ran."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from build.context import Context
from build.steps import After, run_steps, step
from build.vendor import Vendor


@pytest.fixture
def ctx(tmp_path: Path) -> Context:
    return Context(vendor=Vendor(), repository=tmp_path, work=tmp_path / "work", epoch=1)


def recipe(calls: list[str], source: Path, out: Path) -> list:  # type: ignore[type-arg]
    @step(inputs=lambda ctx: [source], outputs=lambda ctx: [out / "a"])
    def first(ctx: Context) -> None:
        calls.append("first")
        out.mkdir(exist_ok=True)
        (out / "a").write_text(source.read_text())

    @step(inputs=lambda ctx: [After("first"), "setting"], outputs=lambda ctx: [out / "b"])
    def second(ctx: Context) -> None:
        calls.append("second")
        (out / "b").write_text((out / "a").read_text() + "+b")

    @step(
        inputs=lambda ctx: [After("second"), source.parent / "overlay"],
        outputs=lambda ctx: [out / "c"],
        consumes="second",
    )
    def third(ctx: Context) -> None:
        calls.append("third")
        (out / "b").write_text((out / "b").read_text() + "+c")
        (out / "c").write_text("c")

    return [first, second, third]


def test_unchanged_steps_are_skipped_and_changed_ones_run_with_what_follows(
    ctx: Context, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source, out = tmp_path / "source.txt", tmp_path / "out"
    (tmp_path / "overlay").mkdir()
    source.write_text("one")
    calls: list[str] = []
    steps = recipe(calls, source, out)

    run_steps(ctx, None, steps)
    assert calls == ["first", "second", "third"]
    assert (out / "b").read_text() == "one+b+c"

    calls.clear()
    ctx.ran.clear()
    with caplog.at_level(logging.INFO, logger="build"):
        run_steps(ctx, None, steps)
    assert calls == []
    assert "==> first: skipped (inputs unchanged)" in caplog.text

    # An input of the first step changed: everything after it runs too.
    source.write_text("two")
    ctx.ran.clear()
    run_steps(ctx, None, steps)
    assert calls == ["first", "second", "third"]
    assert (out / "b").read_text() == "two+b+c"


def test_a_step_that_changes_output_in_place_starts_from_a_clean_copy(
    ctx: Context, tmp_path: Path
) -> None:
    source, out = tmp_path / "source.txt", tmp_path / "out"
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    source.write_text("one")
    calls: list[str] = []
    steps = recipe(calls, source, out)
    run_steps(ctx, None, steps)

    # Only the third step's own input changed: the second step runs again first, so the third
    # never applies itself twice.
    (overlay / "new-file").write_text("x")
    calls.clear()
    ctx.ran.clear()
    run_steps(ctx, None, steps)
    assert calls == ["second", "third"]
    assert (out / "b").read_text() == "one+b+c"


def test_a_missing_output_makes_a_step_run_again(ctx: Context, tmp_path: Path) -> None:
    source, out = tmp_path / "source.txt", tmp_path / "out"
    (tmp_path / "overlay").mkdir()
    source.write_text("one")
    calls: list[str] = []
    steps = recipe(calls, source, out)
    run_steps(ctx, None, steps)
    (out / "c").unlink()
    calls.clear()
    ctx.ran.clear()
    run_steps(ctx, None, steps)
    assert calls == ["second", "third"]


def test_until_stops_after_the_named_step(ctx: Context, tmp_path: Path) -> None:
    source, out = tmp_path / "source.txt", tmp_path / "out"
    (tmp_path / "overlay").mkdir()
    source.write_text("one")
    calls: list[str] = []
    run_steps(ctx, "second", recipe(calls, source, out))
    assert calls == ["first", "second"]


def test_a_cache_step_keeps_its_result_when_a_run_with_other_inputs_fails(
    ctx: Context, tmp_path: Path
) -> None:
    setting = ["a"]
    cache = tmp_path / "cache"

    @step(
        inputs=lambda ctx: [setting[0]],
        outputs=lambda ctx: [cache / f"{ctx.keys['cached']}.tar"],
        keyed_outputs=True,
    )
    def cached(ctx: Context) -> None:
        if setting[0] == "unreachable":
            raise RuntimeError("mirror down")
        cache.mkdir(exist_ok=True)
        (cache / f"{ctx.keys['cached']}.tar").write_text(setting[0])

    run_steps(ctx, None, [cached])
    setting[0] = "unreachable"
    ctx.ran.clear()
    with pytest.raises(RuntimeError):
        run_steps(ctx, None, [cached])
    setting[0] = "a"
    ctx.ran.clear()
    run_steps(ctx, None, [cached])
    assert "cached" not in ctx.ran
