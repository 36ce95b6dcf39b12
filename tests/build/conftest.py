"""Fixtures for the appliance build tests: the built appliance, a results file for timings."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from build.context import REPOSITORY, Context
from build.vendor import load_vendor

RESULTS = REPOSITORY / "build" / "work" / "test-results.json"
# Held while the appliance is built and while the results file is merged: the suite runs on
# two workers (tests/conftest.py), and the second to get here waits for the first's build.
LOCK = REPOSITORY / "build" / "work" / "tests.lock"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    with LOCK.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def appliance() -> Context:
    """The appliance of this checkout, built now if it is missing or out of date.

    The pipeline skips every step whose inputs did not change, so an up-to-date build costs
    seconds; a fresh clone builds from scratch (mmdebstrap, about 10 minutes here).
    """
    if os.geteuid() != 0:
        pytest.skip("building the appliance needs root")
    from build.pipeline import build_image

    ctx = Context(vendor=load_vendor(REPOSITORY / "image" / "vendor.toml"))
    with locked():  # a worker that waited finds every step done: seconds
        build_image(ctx)
    return ctx


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, object]]:
    """Measurements (boot times, sizes) written to build/work/test-results.json."""
    collected: dict[str, object] = {}
    yield collected
    # tests/e2e and tests/faults import this fixture into their own conftest, which gives
    # each folder its own instance: each merges what it measured into the file.
    # So does each xdist worker: the lock keeps one worker's merge from losing another's.
    with locked():
        merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
        merged.update(collected)
        RESULTS.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path
