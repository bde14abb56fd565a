"""Timing evidence: hidden-work and faster-than-declared alerts (capacity: accounting tests)."""

from __future__ import annotations

from fpmon.replay.timing import TimingModel


def test_slower_than_reference_beyond_the_band_alerts_once() -> None:
    tm = TimingModel(margin=0.2, min_samples=3, capacity_margin=0.25)
    assert [tm.observe("n", 1.05, 1.0, 10) for _ in range(5)] == [None] * 5  # inside the band
    found = [tm.observe("n", 2.0, 1.0, 10) for _ in range(8)]
    alerts = [f for f in found if f]
    assert len(alerts) == 1 and alerts[0].details["direction"] == "slower"
    assert alerts[0].kind == "suspected_hidden_work"
    # Its blind spot is in the alert itself: no alert is no evidence of no hidden work.
    assert "another process barely slows a launch-bound decode" in alerts[0].message
    assert "undeclared_capacity" in alerts[0].details["blind_spot"]


def test_faster_than_declared_and_jitter_widens_the_band() -> None:
    tm = TimingModel(margin=0.1, min_samples=3, capacity_margin=0.25)
    fast = [tm.observe("n", 0.5, 1.0, 10) for _ in range(3)]
    assert fast[-1] is not None and fast[-1].details["direction"] == "faster"
    tm2 = TimingModel(margin=0.1, min_samples=3, capacity_margin=0.25)
    assert all(tm2.observe("n", 1.4, 1.0, 10, jitter_rel=0.5) is None for _ in range(5))
    assert all(tm2.observe("n", 9.0, 1.0, 10, same_device=False) is None for _ in range(5))
