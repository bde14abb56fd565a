"""Hidden-work accounting: what a node's own GPUs did against what its committed tokens
explain, and compute processes on its GPUs that are not its engine's.

Why not time alone: a batch-1 decode is launch-bound, and bf16 matmuls in another process on
the same H200 left its throughput where it was (46-53 tokens/s in every phase) while GPM
tensor-pipe utilisation went 0.2% -> 5.6% (10% duty) -> 58% (100% duty) (docs/GPU.md, "Hidden
work: what NVML and GPM see"). Activity is the evidence; the committed tokens are the alibi.

**Observed** (per window, from the node's telemetry, which carries only the GPUs its engine
uses: agents/telemetry.py): activity-seconds per metric, % / 100 x interval, summed over its
GPUs: NVML `util`, GPM `sm_util`, `sm_occupancy`, `tensor_util`, `dram_bw_util`.

**Explained**: the window's committed tokens x the declared work's activity-seconds per token,
from the verifier's own replays of this node's records (median of the last 32):
- GPM metrics: measured with GPM on the reference GPU around each faithful replay
  (`ReferenceMeter`); where the reference has no GPM, `[accounting] reference_shares` (a
  measured share of the reference's wall time, e.g. from docs/GPU.md) if configured; otherwise
  the metric is not judged and the alert and summary say why;
- `util`: the reference's wall time per token, an upper bound (declared work keeps the GPU busy
  at most for its whole run), so it only catches a GPU busier than all declared work could make
  it: a mostly idle node. While a node serves, NVML util saturates and says little (measured:
  honest 0.19-0.25 of the bound, 10% hidden duty 0.30, 100% duty 0.91).
A window with no committed tokens explains nothing: any activity over the floor is unexplained.

**CPU nodes** (telemetry with no GPUs: an engine on the CPU, the demo fleet): metric `cpu`,
observed = the engine process's CPU-seconds in the window (`Telemetry.engine.cpu_s`, between
samples: replay/cputime.py), explained = committed tokens x the reference's process CPU-seconds
per token around its own faithful replays (a CPU reference only: the CPU time of a GPU replay
explains nothing of a CPU engine's).

A metric is over when observed > threshold x explained and observed - explained > floor x the
GPU-seconds covered (for `cpu`: x the wall seconds covered, a share of one core). Thresholds
and floors default to measurements (the H200's for GPU metrics, the demo fleet's for `cpu`)
and the alert says so (`threshold_source`). Telemetry is the node's own word, like its
committed times: a node that lies in telemetry hides from this; the replays are what it
cannot fake.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from fpmon.errors import FpmonError
from fpmon.logs import fields
from fpmon.replay.cputime import Delta, EngineClock
from fpmon.wire import CapacityMetric, CapacityWindow, Telemetry
from fpmon.wire.messages import AlertKind, Severity

log = logging.getLogger("fpmon.replay.accounting")

GPM_METRICS = ("sm_util", "sm_occupancy", "tensor_util", "dram_bw_util")
GPU_METRICS = ("util", *GPM_METRICS)
METRICS = (*GPU_METRICS, "cpu")
SAMPLES = 32
MAX_DT_S = 5.0  # a telemetry gap longer than this counts as this long (no back-filling)

# CPU engines (`cpu`), measured on the demo fleet on this 2-core host, 2026-11-30 (docs/REPLAY.md,
# "CPU accounting"; 15 s windows, tiny model, one torch thread per process, load average 2-23
# from other jobs, four runs): the honest node's observed/explained 1.02-1.83 and its excess
# over explained at most 0.018 of a core (37 windows); nodes running another attention or dtype
# than declared 0.93-2.11, covert batch-4 rows 1.30-2.05. Matmuls in the engine process at 50%
# duty: 4.6-15.7, excess 0.088-0.25 core (21 of 21 windows over); 25%: 3.2-4.1 (7 of 7); 10%:
# 2.1-3.3 (7 of 10). An idle agent's own loops: 0.007 of a core. So ratio 2.5 (1.4x the honest
# maximum) and a floor of 0.03 core (1.7x the honest excess, 4x the idle agent), in
# core-seconds per second of telemetry; an alarm needs both.
CPU_RATIO = 2.5
CPU_FLOOR = 0.03
CPU_FLOOR_MAX = 4096.0  # cores: the `cpu` floor is core-seconds per second, not a share
CPU_SOURCE = (
    "demo fleet on a 2-core host 2026-11-30 (docs/REPLAY.md, CPU accounting): honest engine "
    "CPU observed/explained 1.02-1.83, matmuls in the engine process at 50% duty 4.6-15.7"
)

# Measured on two H200s, 2026-11-30 (docs/GPU.md, "Hidden work: what NVML and GPM see"):
# honest observed/explained 0.86-1.13 on every GPM metric (24 windows of 6 s, node and control
# GPU, reference measured on the other GPU); the weakest hidden work (bf16 matmuls at 10% duty in
# another process) gave SM 2.4-2.6, tensor 26-29; 1 GiB copies at 100%: DRAM 18-24.
DEFAULT_RATIO = {
    "util": 1.25,  # [timing] capacity_margin over the wall-time bound (the old check)
    "sm_util": 2.0,
    "sm_occupancy": 2.0,
    "tensor_util": 2.0,
    "dram_bw_util": 2.0,
    "cpu": CPU_RATIO,
}
# Excess below this share of the GPU-seconds covered is noise, whatever the ratio (an idle
# node's few kernels). Hidden compute at 10% duty added 5.4% tensor and 5.9% SM on the H200.
DEFAULT_FLOOR = {
    "util": 0.05,
    "sm_util": 0.01,
    "sm_occupancy": 0.01,
    "tensor_util": 0.01,
    "dram_bw_util": 0.01,
    "cpu": CPU_FLOOR,
}
DEFAULT_SOURCE = (
    "H200 measurement 2026-11-30 (docs/GPU.md, Hidden work): honest observed/explained "
    "0.86-1.13, bf16 side work at 10% duty 2.4 (SM) / 26 (tensor)"
)
# A window whose tokens no replay has priced yet stays open up to this many windows long.
WAIT_FOR_REFERENCE = 4
FOREIGN_MIN_SAMPLES = 2  # honest runs showed no foreign process at all; 2 absorbs spawn races


@dataclass(frozen=True)
class Settings:
    ratio: dict[str, float]
    floor: dict[str, float]
    source: str
    shares: dict[str, float]  # configured reference shares (0..1) for GPM metrics
    foreign_min_samples: int = FOREIGN_MIN_SAMPLES
    cpu_source: str = CPU_SOURCE  # where the `cpu` thresholds came from

    def source_of(self, metric: str) -> str:
        return self.cpu_source if metric == "cpu" else self.source


KEYS = ("ratio", "floor", "threshold_source", "reference_shares", "foreign_min_samples")


def settings(raw: dict[str, Any], capacity_margin: float, where: str = "[accounting]") -> Settings:
    """`[accounting]` from the replay config, checked; defaults from the H200 measurement."""
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise FpmonError(f"{where} has unknown keys {unknown}; known: {', '.join(KEYS)}")

    def table(
        name: str, default: dict[str, float], low: float, high: float, keys: tuple[str, ...]
    ) -> dict[str, float]:
        got = raw.get(name, {})
        if not isinstance(got, dict) or set(got) - set(keys):
            raise FpmonError(f"{where} {name}: a table of {', '.join(keys)}")
        out = {**default, **{k: float(v) for k, v in got.items()}}
        for k, v in out.items():
            top = CPU_FLOOR_MAX if name == "floor" and k == "cpu" else high
            if not low <= v <= top:
                raise FpmonError(f"{where} {name}.{k} = {v}: must be within [{low}, {top}]")
        return out

    ratio = table("ratio", {**DEFAULT_RATIO, "util": 1 + capacity_margin}, 1.0, 1e6, METRICS)
    floor = table("floor", DEFAULT_FLOOR, 0.0, 1.0, METRICS)
    changed = bool(raw.get("ratio") or raw.get("floor"))
    source = str(raw.get("threshold_source", "configured" if changed else DEFAULT_SOURCE))
    cpu_source = source if changed or "threshold_source" in raw else CPU_SOURCE
    # No share for `cpu`: the reference's CPU time is measured around every replay.
    shares = table("reference_shares", {}, 0.0, 1.0, GPU_METRICS)
    n = int(raw.get("foreign_min_samples", FOREIGN_MIN_SAMPLES))
    if n < 1:
        raise FpmonError(f"{where} foreign_min_samples must be >= 1")
    return Settings(ratio, floor, source, shares, n, cpu_source)


@dataclass(frozen=True)
class Alarm:
    kind: AlertKind
    node: str
    message: str
    alert_id: str
    details: dict[str, Any]
    severity: Severity = "warning"


@dataclass
class _Window:
    start: float
    sums: dict[str, float] = field(default_factory=dict)  # activity-seconds
    covered: dict[str, float] = field(default_factory=dict)  # GPU-seconds reported
    gpus: set[str] = field(default_factory=set)
    gpm_status: dict[str, str] = field(default_factory=dict)

    def add(self, metric: str, pct: float, dt: float) -> None:
        self.add_seconds(metric, pct / 100.0 * dt, dt)

    def add_seconds(self, metric: str, seconds: float, dt: float) -> None:
        self.sums[metric] = self.sums.get(metric, 0.0) + seconds
        self.covered[metric] = self.covered.get(metric, 0.0) + dt


@dataclass
class _Reference:
    wall: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    gpm: dict[str, deque[float]] = field(default_factory=dict)
    cpu: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    device: str = ""


class Accounting:
    def __init__(self, s: Settings, window_s: float) -> None:
        self.s, self.window_s = s, window_s
        self._win: dict[str, _Window] = {}
        self._last_t: dict[str, float] = {}
        self._ref: dict[str, _Reference] = {}
        self._foreign: dict[tuple[str, str, int], int] = {}
        self._foreign_alerted: set[tuple[str, str, int]] = set()
        self._cpu = EngineClock()
        # node -> telemetry refused by the accounting (in bounds on the wire, impossible here)
        self.refused: dict[str, Counter[str]] = {}
        self.last: dict[str, str] = {}  # node -> the last window's verdict, for the summary
        self.windows: dict[str, CapacityWindow] = {}  # node -> the last window, typed

    # --- observed ---------------------------------------------------------------------------
    def telemetry(self, node: str, t: Telemetry, now: float) -> list[Alarm]:
        """Accumulate one sample's activity; return foreign-process alarms it completes."""
        last = self._last_t.get(node)
        self._last_t[node] = now
        alarms = self._foreign_processes(node, t)
        if not t.gpus:
            self._engine_cpu(node, t, now)
            return alarms
        if last is None:
            return alarms
        dt = min(max(now - last, 0.0), MAX_DT_S)
        w = self._win.setdefault(node, _Window(start=now - dt))
        for g in t.gpus:
            gid = g.uuid or f"index {g.index}"
            w.gpus.add(gid)
            w.gpm_status[gid] = g.gpm_status or "not reported by this agent"
            if g.util is not None:
                w.add("util", g.util, dt)
            if g.gpm is not None:
                gdt = min(g.gpm.interval_s, MAX_DT_S)
                for m in GPM_METRICS:
                    v = getattr(g.gpm, m)
                    if v is not None:
                        w.add(m, v, gdt)
        return alarms

    def _engine_cpu(self, node: str, t: Telemetry, now: float) -> None:
        """A node without GPUs: its engine process's CPU time since the last sample."""
        d = self._cpu.step(node, t)
        if isinstance(d, str):
            self.refused.setdefault(node, Counter())[d] += 1
        elif isinstance(d, Delta):
            w = self._win.setdefault(node, _Window(start=now - d.span_s))
            w.add_seconds("cpu", d.cpu_s, d.span_s)

    def _foreign_processes(self, node: str, t: Telemetry) -> list[Alarm]:
        out = []
        seen: set[tuple[str, str, int]] = set()
        for g in t.gpus:
            if g.processes is None:
                continue
            gid = g.uuid or f"index {g.index}"
            engine = [p for p in g.processes if p.engine]
            foreign = [p for p in g.processes if p.engine is False]
            for p in foreign:
                key = (node, gid, p.pid)
                seen.add(key)
                n = self._foreign[key] = self._foreign.get(key, 0) + 1
                if n < self.s.foreign_min_samples or key in self._foreign_alerted:
                    continue
                self._foreign_alerted.add(key)
                eng = ", ".join(f"{q.pid} ({_gb(q.used_memory)})" for q in engine) or "none seen"
                out.append(
                    Alarm(
                        "foreign_process",
                        node,
                        f"{node}'s GPU {g.index} ({gid}) runs a compute process that is not its "
                        f"engine's: pid {p.pid} {p.name or '(name not visible)'} holding "
                        f"{_gb(p.used_memory)}, in {n} consecutive samples; engine pid(s) {eng}. "
                        f"Threshold: any such process in {self.s.foreign_min_samples} samples "
                        "(honest H200 runs showed none, docs/GPU.md)",
                        f"foreign_process:{node}:{gid}:{p.pid}",
                        {
                            "gpu": g.index,
                            "uuid": gid,
                            "pid": p.pid,
                            "name": p.name,
                            "used_memory": p.used_memory,
                            "samples": n,
                            "engine_pids": [q.pid for q in engine],
                            "foreign_on_gpu": [
                                {"pid": q.pid, "name": q.name, "used_memory": q.used_memory}
                                for q in foreign
                            ][:32],
                            "threshold_samples": self.s.foreign_min_samples,
                        },
                    )
                )
        for key in [k for k in self._foreign if k[0] == node and k not in seen]:
            del self._foreign[key]  # gone: a later return is counted afresh
        return out

    # --- explained --------------------------------------------------------------------------
    def judged(
        self,
        node: str,
        reference_s: float,
        tokens: int,
        activity: dict[str, float] | None,
        device: str = "",
        cpu_s: float | None = None,
    ) -> None:
        """One replay on the reference: its wall time, its process CPU time and, where
        measured, GPM activity."""
        if reference_s <= 0 or tokens <= 0:
            return
        r = self._ref.setdefault(node, _Reference())
        r.wall.append(reference_s / tokens)
        r.device = device or r.device
        if cpu_s is not None and cpu_s > 0:
            r.cpu.append(cpu_s / tokens)
        for m, v in (activity or {}).items():
            if m in GPM_METRICS and v >= 0:
                r.gpm.setdefault(m, deque(maxlen=SAMPLES)).append(v / tokens)

    def per_token(self, node: str, metric: str) -> tuple[float | None, str]:
        """(activity-seconds per declared token, where it came from) or (None, why not)."""
        r = self._ref.get(node)
        if r is None or not r.wall:
            return None, "no replay of this node's records yet"
        on = f" on {r.device}" if r.device else ""
        if metric == "cpu":
            if not r.device.startswith("cpu"):
                return None, (
                    f"the reference replays{on}: its CPU time is not what a CPU engine spends"
                )
            if not r.cpu:
                return None, "the reference's CPU time was not measured"
            return statistics.median(r.cpu), (
                f"reference process CPU time per token around {len(r.cpu)} replays{on}"
            )
        if metric == "util":
            return statistics.median(r.wall), (
                f"reference wall time per token ({len(r.wall)} replays{on}), an upper bound"
            )
        got = r.gpm.get(metric)
        if got:
            return statistics.median(got), (
                f"GPM on the reference GPU around {len(got)} replays of this node's records"
            )
        if metric in self.s.shares:
            share = self.s.shares[metric]
            return statistics.median(r.wall) * share, (
                f"[accounting] reference_shares.{metric} = {share:g} of the reference wall time"
            )
        return None, f"not measured on the reference{on} (no GPM there) and no reference_share"

    # --- the window -------------------------------------------------------------------------
    def check(self, node: str, now: float, tokens_since: Any) -> Alarm | None:
        """At the end of a window: observed vs explained per metric; an alarm if any is over.
        `tokens_since(t)`: the node's committed tokens since t."""
        w = self._win.get(node)
        if w is None or now - w.start < self.window_s:
            return None
        window = now - w.start
        tokens = int(tokens_since(w.start))
        r = self._ref.get(node)
        if tokens and (r is None or not r.wall) and window < WAIT_FOR_REFERENCE * self.window_s:
            # Tokens and no replay yet to say what they cost: the window stays open until the
            # first replay, rather than closing unjudged (a node's first window, mostly).
            return None
        del self._win[node]
        metrics: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        judged: list[CapacityMetric] = []  # the same figures, unrounded, as the wire has them
        over = []
        # A node is judged on its GPUs' activity, or, with no GPU, on its engine's CPU time.
        for m in GPU_METRICS if w.gpus else ("cpu",):
            if m not in w.sums:
                skipped[m] = _unreported(w, m)
                continue
            if tokens:
                per_token, why = self.per_token(node, m)
                if per_token is None:
                    skipped[m] = why
                    continue
            else:
                per_token, why = 0.0, "no committed tokens in the window"
            obs, exp = w.sums[m], tokens * per_token
            floor_s = self.s.floor[m] * w.covered[m]
            ratio = obs / exp if exp > 0 else None
            threshold = self.s.ratio[m]
            is_over = obs - exp > floor_s and (ratio is None or ratio > threshold)
            judged.append(
                CapacityMetric(
                    metric=m,
                    observed_s=_clamp(obs),
                    explained_s=_clamp(exp),
                    threshold=threshold,
                    floor_s=_clamp(floor_s),
                    over=is_over,
                    explained_by=why[:4096],
                )
            )
            metrics[m] = {
                "observed_s": round(obs, 3),
                "explained_s": round(exp, 3),
                "ratio": None if ratio is None else round(ratio, 3),
                "threshold": threshold,
                "floor_s": round(floor_s, 3),
                "explained_by": why,
                "over": is_over,
            }
            if m == "cpu":
                metrics[m]["unit"] = "CPU-seconds of the engine process"
            if is_over:
                over.append(m)
        refused = dict(self.refused.get(node, {}))
        self.last[node] = _describe(w, metrics, skipped, tokens, window, refused)
        # Every window, over or not: the honest spread is measured from these lines.
        log.info(
            "capacity window",
            extra=fields(
                node=node,
                window_s=round(window, 1),
                tokens=tokens,
                ratios={m: v["ratio"] for m, v in metrics.items()},
                observed={m: v["observed_s"] for m, v in metrics.items()},
                explained={m: v["explained_s"] for m, v in metrics.items()},
                over=over,
                refused=refused,
            ),
        )
        self.windows[node] = CapacityWindow(
            start_t=min(max(w.start, 0.0), 1e10),
            window_s=_clamp(window),
            tokens=tokens,
            gpus=min(len(w.gpus), 1 << 16),
            metrics=judged,
            not_judged={m: why[:4096] for m, why in skipped.items()},
            threshold_source=self.s.source[:4096],
        )
        if not over:
            return None
        parts = [
            f"{m} {metrics[m]['observed_s']:.1f} s observed vs {metrics[m]['explained_s']:.2f} s "
            f"explained ({_ratio(metrics[m]['ratio'])} > {metrics[m]['threshold']:g})"
            for m in over
        ]
        sources = "; ".join(dict.fromkeys(self.s.source_of(m) for m in over))
        what = "own GPU(s)" if w.gpus else "engine process"
        msg = (
            f"{node}'s {what} did more than its {tokens} committed tokens explain in "
            f"{window:.0f} s: {'; '.join(parts)}. Thresholds: {sources}"
        )
        return Alarm(
            "undeclared_capacity",
            node,
            msg,
            f"undeclared_capacity:{node}:{w.start:.0f}",
            {
                "window_s": round(window, 1),
                "tokens": tokens,
                "gpus": sorted(w.gpus)[:64],
                "over": over,
                "metrics": metrics,
                "not_judged": skipped,
                "threshold_source": sources,
                **({"refused_samples": refused} if refused else {}),
            },
        )

    def describe(self, node: str) -> str:
        return self.last.get(node, "")

    def window(self, node: str) -> CapacityWindow | None:
        """The last window's figures, for the node summary a monitor shows (NodeSummary)."""
        return self.windows.get(node)


def _ratio(r: float | None) -> str:
    return "no tokens to explain it" if r is None else f"ratio {r:.2f}"


def _gb(b: float | None) -> str:
    return "memory not reported" if b is None else f"{b / 1e9:.2f} GB"


def _unreported(w: _Window, metric: str) -> str:
    """Why a metric has no observed figure in the window."""
    if metric in ("util", "cpu"):
        return "not reported"
    return f"not reported (GPM: {'; '.join(sorted(set(w.gpm_status.values())))[:200]})"


def _describe(
    w: _Window,
    metrics: dict[str, dict[str, Any]],
    skipped: dict[str, str],
    tokens: int,
    s: float,
    refused: dict[str, int],
) -> str:
    judged = ", ".join(
        f"{m} {v['observed_s']:.1f}/{v['explained_s']:.1f} s" + (" OVER" if v["over"] else "")
        for m, v in metrics.items()
    )
    what = f"{len(w.gpus)} GPU(s)" if w.gpus else "engine CPU"
    out = f"{what}, last {s:.0f} s, {tokens} tokens: {judged or 'nothing judged'}"
    if skipped:
        out += f"; not judged: {', '.join(sorted(skipped))}"
    if refused:
        out += f"; refused samples: {_counts(refused)}"
    return out[:4096]


def _clamp(x: float) -> float:
    """Within the wire's bound on activity-seconds: one figure beyond it would make the whole
    state reply a schema reject at every monitor (no real window comes near it)."""
    return min(x, 1e12)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items()))


class ReferenceMeter:
    """GPM activity on the reference GPU around one replay (device-wide: give the verifier its
    own GPU, or a neighbour's work inflates what the declared work seems to explain)."""

    def __init__(self, device: str, nv: Any = None) -> None:
        self.device, self.nv = device, nv
        self.reader: Any = None
        self.status = "" if device.startswith("cuda") else f"reference device {device}: no GPM"

    def _open(self) -> None:
        from fpmon.gpm import GpmReader, engine_gpus, torch_runtime_uuid

        try:
            if self.nv is None:
                import pynvml

                self.nv = pynvml
            nv = self.nv
            nv.nvmlInit()
            uuids = [
                nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))
                for i in range(nv.nvmlDeviceGetCount())
            ]
            idx, scope = engine_gpus(self.device, uuids, os.environ, torch_runtime_uuid)
            if not idx:
                self.status = f"no GPM: {scope}"
                return
            self.reader = GpmReader(nv, nv.nvmlDeviceGetHandleByIndex(idx[0]))
            self.status = f"{self.reader.status} ({scope})"
        except Exception as e:  # no NVML: replays are still judged, activity not measured
            self.status = f"no GPM: NVML unavailable: {e}"

    @contextlib.contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        """Yields a map filled, after the block, with activity-seconds per GPM metric."""
        out: dict[str, float] = {}
        if not self.status:
            self._open()
        if self.reader is None:
            yield out
            return
        self.reader.read()
        yield out
        metrics, _status = self.reader.read()
        if metrics is not None:
            dt = metrics["interval_s"]
            out.update({m: metrics[m] / 100.0 * dt for m in GPM_METRICS if m in metrics})
