"""The power-loss test boots the appliance of this checkout (the boot tests' fixtures)."""

from tests.build.conftest import appliance, results

__all__ = ["appliance", "results"]
