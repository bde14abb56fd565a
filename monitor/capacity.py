"""Hidden work as the dashboard shows it, from typed wire data only (no Textual here).

Two sources, each the verifier's or the node's own typed word:
- the verifier's accounting window (`NodeSummary.accounting`, a `CapacityWindow` from
  replay/accounting.py): per metric, the activity-seconds the node's GPUs reported against what
  its committed tokens explain, and whether the verifier calls that over its threshold;
- the node's telemetry (`GpuSample.processes`): compute processes on its GPUs, each marked as
  the engine's or not (`GpuProcess.engine`).

The ratio shown is observed / explained, computed here from the two bounded figures (so never
NaN or negative); whether it is flagged is the verifier's decision (`over`), which also weighs
the noise floor. Metric names are shown as the verifier sends them, shortened where known.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from fpmon.monitor.format import printable
from fpmon.monitor.history import History
from fpmon.wire import CapacityMetric, CapacityWindow, ChallengeSummary, Telemetry

# The alert kinds about hidden work (replay/accounting.py, replay/timing.py).
HIDDEN_KINDS = frozenset({"undeclared_capacity", "foreign_process", "suspected_hidden_work"})
SHORT = {
    "util": "util",
    "sm_util": "sm",
    "sm_occupancy": "occ",
    "tensor_util": "tensor",
    "dram_bw_util": "dram",
}
FOREIGN_KEPT = 64  # processes listed per node; the count covers them all
ALERTS_KEPT = 32  # hidden-work alerts kept per node for its capacity screen


def short(metric: str) -> str:
    return SHORT.get(metric, metric)


def ratio_of(observed: float, explained: float) -> float:
    """observed / explained: inf when activity has nothing to explain it, 0 when idle."""
    if explained > 0:
        return observed / explained  # inf when a tiny explained figure overflows it
    return math.inf if observed > 0 else 0.0


def ratio(m: CapacityMetric) -> float:
    return ratio_of(m.observed_s, m.explained_s)


def ratio_text(r: float) -> str:
    if math.isinf(r):
        return "∞x"
    if r < 100:
        return f"{r:.1f}x"
    if r < 10_000:
        return f"{r:.0f}x"
    return ">9999x"


def worst(w: CapacityWindow) -> CapacityMetric | None:
    """The metric that says most: over its threshold first, then the highest ratio."""
    if not w.metrics:
        return None
    return max(w.metrics, key=lambda m: (m.over, ratio(m)))


@dataclass(frozen=True)
class Finding:
    """What the fleet's hidden-work column says about a node."""

    text: str
    flagged: bool = False
    sort: float | None = None  # the worst ratio; None: not judged
    tip: str = ""  # why, in words: shown on hover and on the capacity screen


def metric_line(m: CapacityMetric) -> str:
    flag = f"OVER {m.threshold:g}" if m.over else f"threshold {m.threshold:g}"
    return (
        f"{short(m.metric)} {m.observed_s:.3g} s observed / {m.explained_s:.3g} s explained "
        f"= {ratio_text(ratio(m))} ({flag})"
    )


def window_line(w: CapacityWindow) -> str:
    end = time.strftime("%H:%M:%S", time.localtime(w.start_t + w.window_s))
    return f"window of {w.window_s:.0f} s to {end}, {w.tokens} committed tokens, {w.gpus} GPU(s)"


def not_judged_line(w: CapacityWindow) -> str:
    return "; ".join(f"{short(k)}: {why}" for k, why in sorted(w.not_judged.items()))


TIP_LINE = 300  # characters of one tip line: a reason may be 4 KiB, a tooltip is a glance


def _tip(lines: list[str]) -> str:
    cut = [x if len(x) <= TIP_LINE else x[: TIP_LINE - 1] + "…" for x in lines]
    return "\n".join(printable(x) for x in cut)


def finding(w: CapacityWindow | None, note: str, gpus: int, telemetry: bool) -> Finding:
    """The column for one node: `w` its last window, `note` the verifier's accounting in words
    (`NodeSummary.capacity`), `gpus` the GPUs its last telemetry reported."""
    if w is not None:
        m = worst(w)
        if m is None:
            why = not_judged_line(w) or "the verifier judged no metric"
            return Finding("— not judged", tip=_tip([window_line(w), f"not judged: {why}"]))
        lines = [window_line(w), *(metric_line(x) for x in w.metrics)]
        if w.not_judged:
            lines.append(f"not judged: {not_judged_line(w)}")
        if w.threshold_source:
            lines.append(f"thresholds: {w.threshold_source}")
        tip = _tip(lines)
        r = ratio(m)
        if not m.over and w.tokens == 0:
            # Nothing committed and nothing over the floor: an idle node, not a ratio of 0/0.
            return Finding("idle", sort=0.0, tip=tip)
        text = f"{short(m.metric)} {ratio_text(r)}"
        return Finding(printable(f"! {text}" if m.over else text), m.over, r, tip)
    if telemetry and not gpus:
        return Finding("— no GPU", tip="the node reports no NVIDIA GPU: no GPU activity to account")
    if note:
        return Finding("— pending", tip=_tip([f"the verifier: {note}"]))
    return Finding(
        "—",
        tip="no accounting from the verifier yet: its first window is not complete, or the "
        "dashboard has no state endpoint to ask",
    )


@dataclass(frozen=True)
class ForeignProcess:
    gpu: int
    pid: int
    name: str | None
    used_memory: float | None


@dataclass(frozen=True)
class Processes:
    """The compute processes on a node's GPUs in its last telemetry."""

    foreign: int  # not the engine's (GpuProcess.engine is False)
    unknown: int  # the agent could not tell (engine is None)
    engine: int
    listed: tuple[ForeignProcess, ...] = ()  # the first FOREIGN_KEPT foreign ones


def processes(t: Telemetry) -> Processes | None:
    """None when no GPU of the node reported its process list (not read, or no GPU)."""
    read = False
    foreign = unknown = engine = 0
    listed: list[ForeignProcess] = []
    for g in t.gpus:
        if g.processes is None:
            continue
        read = True
        for p in g.processes:
            if p.engine is False:
                foreign += 1
                if len(listed) < FOREIGN_KEPT:
                    listed.append(ForeignProcess(g.index, p.pid, p.name, p.used_memory))
            elif p.engine is None:
                unknown += 1
            else:
                engine += 1
    return Processes(foreign, unknown, engine, tuple(listed)) if read else None


def foreign_finding(p: Processes | None) -> Finding:
    if p is None:
        return Finding("—", tip="the node's telemetry lists no GPU processes (not read, no GPU)")
    names = ", ".join(f"{x.pid} {x.name or '(name not visible)'}" for x in p.listed[:8]) + (
        " ..." if p.foreign > 8 else ""
    )
    tip = f"{p.foreign} foreign, {p.engine} the engine's, {p.unknown} not attributable"
    if p.foreign:
        return Finding(f"! {p.foreign}", True, float(p.foreign), _tip([f"{tip}: {names}"]))
    return Finding("0", sort=0.0, tip=tip)


class CapacityHistory:
    """A node's accounting windows over time, one point per window (as the verifier sent
    them; a window seen again in the next state reply is not added twice). Per metric,
    observed and explained activity-seconds in fixed blocks; NaN where a window did not judge
    that metric."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.end_t = History(size)  # wall time each window ended
        self.observed: dict[str, History] = {}
        self.explained: dict[str, History] = {}
        self.over: dict[str, History] = {}  # 1.0 where the verifier called it over
        self.last_start = -1.0

    def add(self, w: CapacityWindow) -> bool:
        if w.start_t <= self.last_start:
            return False
        self.last_start = w.start_t
        self.end_t.append(w.start_t + w.window_s)
        got = {m.metric: m for m in w.metrics}
        for name in got.keys() - self.observed.keys():
            if len(self.observed) >= 32:  # the wire's bound on metrics per window
                break
            for series in (self.observed, self.explained, self.over):
                h = series[name] = History(self.size)
                for _ in range(len(self.end_t) - 1):  # earlier windows did not judge it
                    h.append(math.nan)
        for name in self.observed:
            m = got.get(name)
            self.observed[name].append(m.observed_s if m else math.nan)
            self.explained[name].append(m.explained_s if m else math.nan)
            self.over[name].append(1.0 if m and m.over else 0.0 if m else math.nan)
        return True

    def ratios(self, metric: str) -> list[float]:
        """observed / explained per window, NaN where not judged."""
        pairs = zip(self.observed[metric], self.explained[metric], strict=True)
        return [math.nan if math.isnan(o) else ratio_of(o, e) for o, e in pairs]

    def __len__(self) -> int:
        return len(self.end_t)


SPARK = " ▁▂▃▄▅▆▇█"
SPARK_DECADES = (-1, 3)  # 0.1x at the bottom, 1000x (and ∞) at the top: honest sits near 1x


def ratio_spark(ratios: list[float], width: int = 12) -> str:
    """Ratios on a log scale, one character a window, the latest right; blank where the
    window did not judge the metric."""
    lo, hi = SPARK_DECADES
    out = []
    for r in ratios[-width:]:
        if math.isnan(r):
            out.append(" ")
        elif r <= 0:
            out.append(SPARK[1])
        else:
            f = (min(max(math.log10(r), lo), hi) - lo) / (hi - lo)  # log10(inf) is inf: top
            out.append(SPARK[1 + round(f * 7)])
    return "".join(out).rjust(width)


def challenge_line(c: ChallengeSummary | None) -> str:
    """The verifier's timed challenges of a node, in one line (replay/challenges.py)."""
    if c is None:
        return "Challenge latencies vs reference: this node is not challenged ([challenges])."
    last = c.recent[-1] if c.recent else None
    med = f"{c.median_ratio:.2f}" if c.median_ratio is not None else "—"
    line = (
        f"Challenges: {c.sent} sent, {c.judged} judged, {c.over} over the band "
        f"(latency > {c.max_ratio:g} x (reference + queue) + {c.slack_s:g} s), {c.failed} failed; "
        f"median latency/expected {med}"
    )
    if last is not None:
        line += (
            f"; last: {last.latency_s:.2f} s vs reference {last.reference_s:.2f} s "
            f"+ queue {last.queue_s:.2f} s"
        )
    return line + ("  ! suspected hidden work" if c.alerted else "")
