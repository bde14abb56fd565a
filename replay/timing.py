"""Time as evidence: committed timings against the reference's for the declared setup.

Hidden work that leaves numerics untouched still competes for the GPU, but only where the
declared work keeps the GPU busy. Blind spot, measured: a launch-bound batch-1 decode served
46-53 tokens/s on an H200 whether or not another process ran bf16 matmuls beside it at 10-100%
duty (docs/GPU.md, "Hidden work: what NVML and GPM see"; docs/ENVIRONMENT.md records the same on
an H100). So no alert here is no evidence of no hidden work: GPU activity accounting and the
process list (replay/accounting.py: `undeclared_capacity`, `foreign_process`) see what time does
not. Each alert states the ratio, the jitter it was judged against and how many samples; a
single record never raises one. The committed times are the node's own word.

Slower is not only hidden GPU work: a launch-bound decode waits on its CPU thread, so CPU
contention on the node's host slows it the same way (H200, honest node, 32 busy loops on the
host's 32 CPUs: 2.35x the reference's time; docs/GPU.md, "Host CPU contention"). A "slower"
alert therefore names its most likely cause from the node's last GPU accounting window: GPU
activity beyond what its tokens explain points at hidden GPU work; activity its tokens explain
points off the GPU (host CPU contention, or hidden CPU work), which time alone cannot separate.
"""

from __future__ import annotations

import os
import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fpmon.wire.messages import AlertKind, CapacityWindow, Severity

SAMPLES = 32
BLIND_SPOT = (
    "work in another process barely slows a launch-bound decode (H200: 46-53 tokens/s with and "
    "without bf16 side work at 10-100% duty), so timing misses it; see undeclared_capacity and "
    "foreign_process. And committed times are the node's own word: the verifier-timed "
    "challenges (source: challenge) time its latency independently"
)
LOADED = 1.0  # verifier_load() at which the verifier's reference times are not trusted to be fast
HOST_CPU = "H200: an honest node with every host CPU busy committed 2.35x the reference's time"


def likely_cause(gpu: CapacityWindow | None) -> tuple[str, str]:
    """(cause, why) of a "slower" finding, from the node's last accounting window: time alone
    cannot tell hidden GPU work from a loaded host, the node's own counters can tell which."""
    judged = gpu.metrics if gpu is not None else []
    if not judged:
        return "unknown", (
            "no accounting window judged for this node yet: time alone cannot tell hidden GPU "
            f"work from CPU contention on the node's host ({HOST_CPU})"
        )
    assert gpu is not None
    figures = ", ".join(
        f"{m.metric} {m.observed_s / m.explained_s:.2f}x" if m.explained_s > 0 else m.metric
        for m in judged
    )
    where = "GPU activity" if gpu.gpus else "engine CPU time"
    if any(m.over for m in judged):
        return "hidden_gpu_work" if gpu.gpus else "hidden_cpu_work", (
            f"its {where} in the last window was beyond what its committed tokens explain "
            f"({figures}; see undeclared_capacity)"
        )
    # The figures are the node's own telemetry: a node that forges them earns this label, so
    # the text says whose word it rests on (the challenges time the node independently).
    return "host_contention", (
        f"its {where} in the last window, as its own telemetry reports it, was what its "
        f"committed tokens explain ({figures}): "
        "the extra time is not counted work on its "
        + ("GPUs" if gpu.gpus else "engine")
        + f" — most likely CPU contention on the node's host ({HOST_CPU}) or hidden work on "
        "its CPUs, which time alone cannot separate"
    )


@dataclass
class NodeTiming:
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    alerted: str = ""  # the last direction alerted, so a persistent state alerts once


@dataclass(frozen=True)
class Finding:
    kind: AlertKind  # suspected_hidden_work, undeclared_capacity
    node: str
    message: str
    details: dict[str, Any]
    severity: Severity = "warning"


def verifier_load() -> float:
    """This (the verifier's) host's 1-minute load average per CPU it may use: at 1 or more,
    runnable threads wait for a CPU, and a launch-bound reference replay waits with them."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return os.getloadavg()[0] / max(cpus or 1, 1)


class TimingModel:
    def __init__(
        self,
        margin: float,
        min_samples: int,
        capacity_margin: float,
        profile: dict[str, Any] | None = None,
    ) -> None:
        self.profile = profile  # from run_interference on the reference GPU, when measured
        self.margin = margin
        self.min_samples = min_samples
        self.capacity_margin = capacity_margin  # used by replay/accounting.py (util threshold)
        self.nodes: dict[str, NodeTiming] = {}

    def observe(
        self,
        node: str,
        committed_s: float,
        reference_s: float,
        tokens: int,
        jitter_rel: float | None = None,
        same_device: bool = True,
        gpu: CapacityWindow | None = None,
        verifier_load: float | None = None,
    ) -> Finding | None:
        """One judged record: committed time vs the reference's time for the declared setup.
        `gpu`: the node's last accounting window, read only to name a "slower" alert's cause;
        `verifier_load`: `verifier_load()` now, read only to excuse a "faster" one."""
        if committed_s <= 0 or reference_s <= 0 or not same_device:
            return None  # no comparable timing (other device without a speed calibration)
        st = self.nodes.setdefault(node, NodeTiming())
        st.ratios.append(committed_s / reference_s)
        if len(st.ratios) < self.min_samples:
            return None
        ratio = statistics.median(st.ratios)
        band = max(self.margin, jitter_rel or 0.0)
        direction = "slower" if ratio > 1 + band else "faster" if ratio < 1 / (1 + band) else ""
        # A loaded verifier host slows the reference, so every node looks faster (seen on a
        # 2-CPU host running the verifier beside its nodes): that is the verifier's state, not
        # the node's. Excused and unexcused are separate states, so a node still faster once
        # the load is gone is alerted then, not hidden behind the excused alert.
        excused = direction == "faster" and verifier_load is not None and verifier_load >= LOADED
        state = f"{direction}:excused" if excused else direction
        if state == st.alerted:
            return None
        st.alerted = state
        if not direction:
            return None
        details = {
            "median_ratio": round(ratio, 4),
            "band": band,
            "samples": len(st.ratios),
            "direction": direction,
            "blind_spot": BLIND_SPOT,
        }
        if direction == "slower":
            from fpmon.replay.interference import explain_slowdown

            explained = explain_slowdown(self.profile or {}, ratio)
            details["explained_by"] = explained or (
                "no interference profile for this reference: the intensity is not estimated"
            )
            cause, why = likely_cause(gpu)
            details["likely_cause"], details["cause_evidence"] = cause, why
            msg = (
                f"{node} commits {ratio:.2f}x the reference's time for its declared setup "
                f"(band ±{band:.0%}, {len(st.ratios)} records): suspected hidden work. "
                f"Likely cause: {why}. Blind spot: {BLIND_SPOT}"
            )
        elif excused:
            assert verifier_load is not None
            details["likely_cause"] = "verifier_contention"
            details["verifier_load"] = round(verifier_load, 2)
            msg = (
                f"{node} is {1 / ratio:.2f}x faster than its declared setup allows (band "
                f"±{band:.0%}), but the verifier's own host is loaded ({verifier_load:.1f} "
                "runnable threads per CPU over the last minute), which slows its reference "
                "replays: not evidence against the node. Give the verifier hardware of its own"
            )
            return Finding("suspected_hidden_work", node, msg, details, severity="info")
        else:
            details["likely_cause"] = "cheaper_setup"
            msg = (
                f"{node} is {1 / ratio:.2f}x faster than its declared setup allows (band "
                f"±{band:.0%}): it runs something cheaper than it declared"
            )
        return Finding("suspected_hidden_work", node, msg, details)
