"""Timing evidence: hidden-work and faster-than-declared alerts (capacity: accounting tests)."""

from __future__ import annotations

import pytest

from fpmon.replay.timing import Finding, TimingModel
from fpmon.wire.messages import CapacityMetric, CapacityWindow


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


def _window(over: bool, gpus: int = 1) -> CapacityWindow:
    metric = "sm_util" if gpus else "cpu"
    observed = 9.5 if over else 1.0
    return CapacityWindow(
        start_t=1.0,
        window_s=10.0,
        tokens=100,
        gpus=gpus,
        metrics=[CapacityMetric(metric, observed, 1.0, threshold=2.0, over=over)],
    )


def _slower(gpu: CapacityWindow | None) -> Finding:
    tm = TimingModel(margin=0.2, min_samples=3, capacity_margin=0.25)
    found = [tm.observe("n", 2.35, 1.0, 10, gpu=gpu) for _ in range(3)]
    assert found[-1] is not None
    return found[-1]


@pytest.mark.parametrize(
    ("gpu", "cause", "says"),
    [
        (None, "unknown", "time alone cannot tell hidden GPU work from CPU contention"),
        (_window(over=True), "hidden_gpu_work", "sm_util 9.50x; see undeclared_capacity"),
        (_window(over=False), "host_contention", "sm_util 1.00x): the extra time is not counted"),
        (_window(over=False, gpus=0), "host_contention", "its engine CPU time in the last"),
        (_window(over=True, gpus=0), "hidden_cpu_work", "its engine CPU time"),
    ],
)
def test_a_slower_alert_names_its_likely_cause_from_the_accounting_window(
    gpu: CapacityWindow | None, cause: str, says: str
) -> None:
    # Host CPU contention slows a launch-bound decode like hidden work does (2.35x on an H200):
    # the node's own activity counters, not time, tell the two apart.
    f = _slower(gpu)
    assert f.details["likely_cause"] == cause
    assert says in f.details["cause_evidence"] and says in f.message


def test_a_loaded_verifier_excuses_faster_until_its_load_is_gone() -> None:
    # A loaded verifier host slows its own reference replays, so an honest node looks faster:
    # said as the verifier's state (info), and a node still faster on a quiet verifier is
    # then alerted as a warning, not hidden behind the excused alert.
    tm = TimingModel(margin=0.1, min_samples=3, capacity_margin=0.25)
    loaded = [tm.observe("n", 0.5, 1.0, 10, verifier_load=2.4) for _ in range(4)]
    (excused,) = [f for f in loaded if f]
    assert excused.severity == "info" and excused.details["likely_cause"] == "verifier_contention"
    assert "not evidence against the node" in excused.message
    quiet = [tm.observe("n", 0.5, 1.0, 10, verifier_load=0.3) for _ in range(2)]
    assert quiet[0] is not None and quiet[1] is None
    assert quiet[0].severity == "warning" and quiet[0].details["likely_cause"] == "cheaper_setup"
    # Slower is never excused by the verifier's load: it makes nodes look faster, not slower.
    slow = TimingModel(margin=0.1, min_samples=3, capacity_margin=0.25)
    found = [slow.observe("s", 2.0, 1.0, 10, verifier_load=3.0) for _ in range(3)]
    assert found[-1] is not None and found[-1].severity == "warning"
