"""Timing evidence: hidden-work and faster-than-declared alerts, undeclared capacity."""

from __future__ import annotations

from fpmon.replay.timing import TimingModel, gpu_busy_s
from fpmon.wire import GpuSample, Telemetry


def test_slower_than_reference_beyond_the_band_alerts_once() -> None:
    tm = TimingModel(margin=0.2, min_samples=3, capacity_margin=0.25)
    assert [tm.observe("n", 1.05, 1.0, 10) for _ in range(5)] == [None] * 5  # inside the band
    found = [tm.observe("n", 2.0, 1.0, 10) for _ in range(8)]
    alerts = [f for f in found if f]
    assert len(alerts) == 1 and alerts[0].details["direction"] == "slower"
    assert alerts[0].kind == "suspected_hidden_work"


def test_faster_than_declared_and_jitter_widens_the_band() -> None:
    tm = TimingModel(margin=0.1, min_samples=3, capacity_margin=0.25)
    fast = [tm.observe("n", 0.5, 1.0, 10) for _ in range(3)]
    assert fast[-1] is not None and fast[-1].details["direction"] == "faster"
    tm2 = TimingModel(margin=0.1, min_samples=3, capacity_margin=0.25)
    assert all(tm2.observe("n", 1.4, 1.0, 10, jitter_rel=0.5) is None for _ in range(5))
    assert all(tm2.observe("n", 9.0, 1.0, 10, same_device=False) is None for _ in range(5))


def test_undeclared_capacity() -> None:
    tm = TimingModel(margin=0.5, min_samples=3, capacity_margin=0.25)
    tm.observe("n", 1.0, 1.0, 100)  # reference: 10 ms a token
    assert tm.capacity("n", busy_s=1.2, tokens=100, window_s=60) is None  # within margin
    f = tm.capacity("n", busy_s=30.0, tokens=100, window_s=60)
    assert f is not None and f.kind == "undeclared_capacity" and f.details["explained_s"] == 1.0
    assert tm.capacity("other", busy_s=30.0, tokens=100, window_s=60) is None  # no reference


def test_gpu_busy_from_telemetry() -> None:
    assert gpu_busy_s(Telemetry(node="n", t=1.0), 1.0) is None
    gpus = [GpuSample(index=0, util=50), GpuSample(index=1, util=100), GpuSample(index=2)]
    # A GPU whose utilisation NVML could not read adds nothing: unknown is not busy.
    assert gpu_busy_s(Telemetry(node="n", t=1.0, gpus=gpus), 2.0) == 3.0
