"""Hidden work in the monitor's model (monitor/capacity.py, monitor/model.py): the verifier's
typed accounting windows and the node's own process lists, as the fleet column and the
capacity screen read them; hostile figures bounded at decode and rendered without surprise."""

from __future__ import annotations

import math

import msgpack
import msgspec
import pytest

from fpmon.monitor import capacity
from fpmon.monitor.capacity import CapacityHistory, finding, foreign_finding, ratio_spark
from fpmon.monitor.model import FleetModel, Limits
from fpmon.testing import synth
from fpmon.wire import (
    CapacityMetric,
    CapacityWindow,
    GpuProcess,
    GpuSample,
    NodeSummary,
    Telemetry,
    WireError,
    decode,
    encode,
)

T0 = 1_790_000_000.0


def roundtrip(msg):
    return decode(encode(msg))  # what the feed hands the model: decoded under limits


def metric(name: str, observed: float, explained: float, over: bool = False) -> CapacityMetric:
    return CapacityMetric(metric=name, observed_s=observed, explained_s=explained,
                          threshold=2.0, over=over)  # fmt: skip


def window(*metrics: CapacityMetric, tokens: int = 100, **kw) -> CapacityWindow:
    return CapacityWindow(start_t=T0, window_s=60.0, tokens=tokens, metrics=list(metrics), **kw)


# -- the fleet column ------------------------------------------------------------------------
def test_the_column_names_the_worst_judged_metric_and_flags_it_when_over():
    f = finding(synth.capacity_window(T0, hidden=True), "", 1, True)
    assert f.text == "! tensor 260x" and f.flagged and f.sort == pytest.approx(260.0)
    # The tip carries every judged metric and where the thresholds come from.
    assert "tensor 31.2 s observed / 0.12 s explained = 260x (OVER 2)" in f.tip
    assert "thresholds: H200 measurement" in f.tip
    honest = finding(synth.capacity_window(T0, hidden=False), "", 1, True)
    assert honest.text == "sm 1.0x" and not honest.flagged and honest.sort == pytest.approx(1.0)


def test_an_over_metric_outranks_a_higher_ratio_the_verifier_did_not_flag():
    """`over` weighs the noise floor too: a high ratio under the floor is not the finding."""
    w = window(metric("sm_util", 0.02, 0.001), metric("dram_bw_util", 9.0, 1.0, over=True))
    assert finding(w, "", 1, True).text == "! dram 9.0x"


def test_not_judged_says_why_never_a_number():
    """No GPM on the node: only NVML util can be judged; with no reference replay yet,
    nothing is, and the verifier's reasons are the tip."""
    w = synth.capacity_window(T0, hidden=False, gpm=False)
    f = finding(w, "", 1, True)
    assert f.text == "util 0.2x" and "sm: not reported (GPM: unsupported" in f.tip
    none = window(not_judged={"tensor_util": "no replay of this node's records yet"})
    f = finding(none, "", 1, True)
    assert f.text == "— not judged" and f.sort is None and not f.flagged
    assert "tensor: no replay of this node's records yet" in f.tip
    assert finding(None, "", 0, True).text == "— no GPU"
    pending = finding(None, "checked: first window not complete", 1, True)
    assert pending.text == "— pending" and "first window not complete" in pending.tip
    assert finding(None, "", 0, False).text == "—"  # nothing heard yet
    assert "no accounting from the verifier" in finding(None, "", 0, False).tip


def test_an_idle_window_is_idle_not_a_ratio_of_nothing():
    f = finding(window(metric("tensor_util", 0.001, 0.0), tokens=0), "", 1, True)
    assert f.text == "idle" and not f.flagged
    # ... but activity with no committed tokens at all, over the floor, is the finding.
    busy = finding(window(metric("tensor_util", 30.0, 0.0, over=True), tokens=0), "", 1, True)
    assert busy.text == "! tensor ∞x" and busy.flagged and busy.sort == math.inf


def test_absurd_figures_render_bounded():
    """Within the wire's bounds a figure can still be absurd: a tiny explained figure (the
    ratio overflows to inf), a huge one, a metric name with control characters or markup."""
    tiny = window(metric("tensor_util", 1e12, 1e-310, over=True))
    assert finding(tiny, "", 1, True).text == "! tensor ∞x"
    huge = window(metric("sm_util", 1e12, 1.0, over=True))
    assert finding(huge, "", 1, True).text == "! sm >9999x"
    named = window(metric("\x1b[2J[bold]x[/]", 5.0, 1.0, over=True))
    text = finding(named, "", 1, True).text
    assert "\x1b" not in text and text == "! ?[2J[bold]x[/] 5.0x"
    # Reasons of 4 KiB each (the wire's bound) make a tip of a few short lines, not 130 KiB.
    wordy = window(metric("util", 1.0, 1.0), threshold_source="y" * 4096,
                   not_judged={f"m{i}": "x" * 4096 for i in range(32)})  # fmt: skip
    lines = finding(wordy, "", 1, True).tip.splitlines()
    assert len(lines) == 4 and max(len(x) for x in lines) == capacity.TIP_LINE
    assert [capacity.ratio_text(r) for r in (0.0, 0.25, 12.5, 264.3, 12345.0)] == [
        "0.0x", "0.2x", "12.5x", "264x", ">9999x",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("observed_s", float("nan")), ("explained_s", -1.0), ("observed_s", float("inf")),
     ("threshold", 0.5), ("window_s", 1e13)],
)  # fmt: skip
def test_hostile_accounting_figures_are_refused_at_decode(field: str, value: float):
    """NaN, negative, infinite or out-of-range figures never reach the model: the whole state
    reply is a counted schema reject, as every other bound."""
    m = synth.capacity_window(T0).to_map()
    if field == "window_s":
        m[field] = value
    else:
        m["metrics"][0][field] = value
    reply = synth.state({"n": NodeSummary()}).to_map()
    reply["nodes"]["n"]["accounting"] = m
    with pytest.raises(WireError) as e:
        decode([b"state", msgpack.packb(reply)])
    assert e.value.reason == "schema"


# -- processes -------------------------------------------------------------------------------
def test_foreign_processes_are_counted_from_the_typed_engine_flag():
    t = synth.gpm_telemetry("n", hidden=True)
    p = capacity.processes(t)
    assert p is not None and (p.foreign, p.engine, p.unknown) == (1, 1, 0)
    assert p.listed[0].pid == synth.FOREIGN.pid and p.listed[0].name == synth.FOREIGN.name
    f = foreign_finding(p)
    assert f.text == "! 1" and f.flagged and "python3 matmul.py" in f.tip
    assert foreign_finding(capacity.processes(synth.gpm_telemetry("n", hidden=False))).text == "0"
    # A process the agent could not attribute is not counted as foreign.
    unsure = synth.gpm_telemetry("n", processes=[GpuProcess(pid=7, engine=None)])
    assert foreign_finding(capacity.processes(unsure)).text == "0"
    # No process list read (an older agent, NVML refused): unknown, not zero.
    assert capacity.processes(synth.telemetry("n", gpus=2)) is None
    assert foreign_finding(None).text == "—"


def test_a_huge_process_list_is_counted_whole_and_listed_bounded():
    procs = [GpuProcess(pid=i, used_memory=1e6, name=f"[x{i}", engine=False) for i in range(256)]
    gpus = [GpuSample(index=i, processes=procs) for i in range(8)]
    t = roundtrip(Telemetry(node="n", t=T0, gpus=gpus))
    p = capacity.processes(t)
    assert p is not None and p.foreign == 2048 and len(p.listed) == capacity.FOREIGN_KEPT
    assert foreign_finding(p).text == "! 2048"


# -- over time -------------------------------------------------------------------------------
def test_windows_over_time_once_each_with_gaps_where_not_judged():
    h = CapacityHistory(4)
    assert h.add(window(metric("util", 1.0, 1.0)))
    assert not h.add(window(metric("util", 1.0, 1.0)))  # the same window, next refresh
    later = msgspec.structs.replace(
        window(metric("util", 2.0, 1.0), metric("tensor_util", 8.0, 1.0)), start_t=T0 + 60
    )
    assert h.add(later)
    assert h.ratios("util") == [1.0, 2.0]
    r = h.ratios("tensor_util")
    assert math.isnan(r[0]) and r[1] == 8.0  # the first window did not judge it
    for i in range(2, 10):
        h.add(msgspec.structs.replace(window(metric("util", i, 1.0)), start_t=T0 + 60 * i))
    assert h.ratios("util") == [6.0, 7.0, 8.0, 9.0] and len(h) == 4  # bounded
    assert all(math.isnan(x) for x in h.ratios("tensor_util"))


def test_ratio_sparkline_is_logarithmic_and_blank_where_not_judged():
    assert ratio_spark([0.05, 1.0, 10.0, 1000.0, math.inf, math.nan], 6) == "▁▃▅██ "
    assert ratio_spark([], 3) == "   "


# -- the model -------------------------------------------------------------------------------
def test_state_refreshes_bring_windows_without_making_a_node_look_live():
    clock = [0.0]
    m = FleetModel(Limits(lost_after_s=20.0), clock=lambda: clock[0])
    m.apply(roundtrip(synth.gpm_telemetry("n", hidden=True)))
    for i in range(3):
        clock[0] += 30.0
        m.tick()
        summary = synth.hidden_summary("n", T0 + 60 * i)
        m.apply(roundtrip(synth.state({"n": summary}, stream_seq=i)))
        m.apply(roundtrip(synth.state({"n": summary}, stream_seq=i)))  # same window again
    row = m.nodes["n"]
    assert row.connection == "lost"  # the daemon's word about a node is not the node talking
    assert row.capacity is not None and row.capacity.start_t == T0 + 120
    assert row.capacity_hist is not None and len(row.capacity_hist) == 3
    assert row.capacity_note.startswith("checked")
    data = m.to_json()["nodes"][0]
    assert data["accounting"]["metrics"][0]["metric"] == "util"
    assert data["foreign_processes"] == 1


def test_a_late_joiners_first_state_fills_telemetry_a_refresh_does_not_overwrite_it():
    m = FleetModel()
    m.apply(roundtrip(synth.state({"n": synth.hidden_summary("n", T0, hidden=True)})))
    assert m.nodes["n"].procs is not None and m.nodes["n"].procs.foreign == 1
    m.apply(roundtrip(synth.gpm_telemetry("n", hidden=False)))  # live: the foreign one left
    m.apply(roundtrip(synth.state({"n": synth.hidden_summary("n", T0 + 60, hidden=True)})))
    assert m.nodes["n"].procs.foreign == 0  # the node's own newer word stands


def test_hidden_work_alerts_are_kept_per_node_and_bounded():
    m = FleetModel()
    m.apply(synth.gpm_telemetry("n"))
    for i in range(20):
        for a in synth.hidden_alerts("n", i, t=T0 + i):
            m.apply(a)
        m.apply(synth.alert("n", "mismatch", i))  # not hidden work: not in the list
    row = m.nodes["n"]
    assert row.hidden_alerts is not None and len(row.hidden_alerts) == capacity.ALERTS_KEPT
    assert {a.kind for a in row.hidden_alerts} == capacity.HIDDEN_KINDS
    assert row.hidden_alerts[-1].t == T0 + 19
    # The alerts screen keeps one group per node and kind.
    assert {k for k in m.alerts} == {f"{k}:n" for k in (*capacity.HIDDEN_KINDS, "mismatch")}
    assert all(e.count == 20 for e in m.alerts.values())


def test_the_challenge_line_states_the_band_and_the_last_stopwatch():
    from fpmon.monitor.capacity import challenge_line
    from fpmon.wire import ChallengePoint, ChallengeSummary

    assert "not challenged" in challenge_line(None)
    p = ChallengePoint(t=1.0, seq=3, latency_s=2.5, reference_s=0.4, queue_s=0.1, ratio=6.2)
    c = ChallengeSummary(
        sent=9,
        judged=7,
        over=5,
        median_ratio=4.0,
        max_ratio=1.5,
        slack_s=0.5,
        alerted=True,
        recent=[p],
    )
    line = challenge_line(c)
    assert "9 sent, 7 judged, 5 over" in line and "1.5 x (reference + queue) + 0.5 s" in line
    assert "last: 2.50 s vs reference 0.40 s + queue 0.10 s" in line
    assert line.endswith("! suspected hidden work")
