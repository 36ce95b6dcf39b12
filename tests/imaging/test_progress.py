"""The Meter's arithmetic: the average rate, and an ETA that follows a change of pace."""

from __future__ import annotations

from imaging.progress import ETA_AFTER, Meter, Progress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_eta_follows_a_slowdown_instead_of_growing_all_run() -> None:
    """A check of 484 pieces: the first 160 are cached (160 a second), the rest come from the
    disk (20 a second). After the slowdown the ETA says what is left at 20 a second within a
    few seconds, where the average since the start said half of it and kept growing."""
    clock, events = Clock(), []
    meter = Meter("check", 484, events.append, interval=0.0, clock=clock)
    for _ in range(4):  # 1 s at 160 a second
        clock.now += 0.25
        meter.add(40)
    assert events[-1].eta is not None and events[-1].eta < 3
    for _ in range(24):  # then 6 s at 20 a second
        clock.now += 0.25
        meter.add(5)
    last: Progress = events[-1]
    left = 484 - last.done
    assert last.done == 280 and last.eta is not None
    assert abs(last.eta - left / 20) < 0.1, last.eta  # 10.2 s
    average_eta = left / last.rate
    assert average_eta < 0.6 * last.eta  # what the average since the start would say
    meter.finish()
    assert events[-1].finished and events[-1].eta is None


def test_no_eta_in_the_first_moments_and_none_without_progress() -> None:
    clock, events = Clock(), []
    meter = Meter("backup", 1000, events.append, interval=0.0, clock=clock)
    clock.now += ETA_AFTER / 2
    meter.add(100)
    assert events[-1].eta is None and events[-1].rate == 200
    clock.now += ETA_AFTER
    meter.add(100)
    assert events[-1].eta is not None
    for _ in range(3):
        clock.now += 3
        meter.add(0)  # stalled for longer than the window: no pace, no ETA
    assert events[-1].eta is None
