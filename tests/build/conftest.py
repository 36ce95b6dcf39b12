"""Fixtures for the appliance build tests: the built appliance, a results file for timings."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from build.context import REPOSITORY, Context
from build.vendor import load_vendor

RESULTS = REPOSITORY / "build" / "work" / "test-results.json"


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
    build_image(ctx)
    return ctx


@pytest.fixture(scope="session")
def results() -> Iterator[dict[str, object]]:
    """Measurements (boot times, sizes) written to build/work/test-results.json."""
    collected: dict[str, object] = {}
    yield collected
    # tests/e2e and tests/faults import this fixture into their own conftest, which gives
    # each folder its own instance: each merges what it measured into the file.
    merged = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    merged.update(collected)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n")


@pytest.fixture
def work(tmp_path: Path) -> Path:
    return tmp_path
