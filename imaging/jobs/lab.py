"""A lab session as the front ends see it: the dashboard watches a `LabRun` (its rule, one
`Row` per PC, the summary) that `hourglass lab serve` started; it never reaches the
transport below it."""

from __future__ import annotations

from imaging.lab.run import LabRun, Row

__all__ = ["LabRun", "Row"]
