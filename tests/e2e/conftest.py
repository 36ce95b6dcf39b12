"""The end-to-end test uses the appliance of this checkout and records its phase times with
the boot tests' measurements (build/work/test-results.json)."""

from tests.build.conftest import appliance, results

__all__ = ["appliance", "results"]
