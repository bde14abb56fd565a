"""Time as evidence: committed timings against the reference's, and GPU busy time against
the work the declared tokens explain.

Hidden work that leaves numerics untouched still competes for the GPU, but only where the
declared work keeps the GPU busy (docs/ENVIRONMENT.md: a launch-bound batch-1 decode hid a
second process at ~500 TFLOP/s within its own run-to-run spread). So each alert states the
ratio, the jitter it was judged against and how many samples; a single record never raises one.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from fpmon.wire import Telemetry

SAMPLES = 32


@dataclass
class NodeTiming:
    ratios: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    cost_per_token: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    alerted: str = ""  # the last direction alerted, so a persistent state alerts once


@dataclass(frozen=True)
class Finding:
    kind: str  # suspected_hidden_work, undeclared_capacity
    node: str
    message: str
    details: dict[str, Any]


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
        self.capacity_margin = capacity_margin
        self.nodes: dict[str, NodeTiming] = {}

    def observe(
        self,
        node: str,
        committed_s: float,
        reference_s: float,
        tokens: int,
        jitter_rel: float | None = None,
        same_device: bool = True,
    ) -> Finding | None:
        """One judged record: committed time vs the reference's time for the declared setup."""
        if committed_s <= 0 or reference_s <= 0 or not same_device:
            return None  # no comparable timing (other device without a speed calibration)
        st = self.nodes.setdefault(node, NodeTiming())
        st.ratios.append(committed_s / reference_s)
        if tokens:
            st.cost_per_token.append(reference_s / tokens)
        if len(st.ratios) < self.min_samples:
            return None
        ratio = statistics.median(st.ratios)
        band = max(self.margin, jitter_rel or 0.0)
        direction = "slower" if ratio > 1 + band else "faster" if ratio < 1 / (1 + band) else ""
        if direction == st.alerted:
            return None
        st.alerted = direction
        if not direction:
            return None
        details = {
            "median_ratio": round(ratio, 4),
            "band": band,
            "samples": len(st.ratios),
            "direction": direction,
        }
        if direction == "slower":
            from fpmon.replay.interference import explain_slowdown

            explained = explain_slowdown(self.profile or {}, ratio)
            details["explained_by"] = explained or (
                "no interference profile for this reference: the intensity is not estimated"
            )
            msg = (
                f"{node} commits {ratio:.2f}x the reference's time for its declared setup "
                f"(band ±{band:.0%}, {len(st.ratios)} records): suspected hidden work"
            )
        else:
            msg = (
                f"{node} is {1 / ratio:.2f}x faster than its declared setup allows (band "
                f"±{band:.0%}): it runs something cheaper than it declared"
            )
        return Finding("suspected_hidden_work", node, msg, details)

    def reference_cost_per_token(self, node: str) -> float | None:
        st = self.nodes.get(node)
        if st is None or not st.cost_per_token:
            return None
        return statistics.median(st.cost_per_token)

    def capacity(self, node: str, busy_s: float, tokens: int, window_s: float) -> Finding | None:
        """GPU busy seconds in a window vs what the declared tokens explain at reference cost."""
        cost = self.reference_cost_per_token(node)
        if cost is None or busy_s <= 0:
            return None
        explained = tokens * cost
        if busy_s <= explained * (1 + self.capacity_margin):
            return None
        return Finding(
            "undeclared_capacity",
            node,
            f"{node}'s GPUs were busy {busy_s:.1f} s in {window_s:.0f} s but its declared "
            f"{tokens} tokens explain {explained:.1f} s (margin {self.capacity_margin:.0%})",
            {
                "busy_s": round(busy_s, 3),
                "explained_s": round(explained, 3),
                "tokens": tokens,
                "cost_per_token_s": cost,
                "margin": self.capacity_margin,
                "window_s": window_s,
            },
        )


def gpu_busy_s(telemetry: Telemetry, dt: float) -> float | None:
    """GPU-seconds busy over `dt` from one telemetry sample; None when there are no GPUs."""
    if not telemetry.gpus:
        return None
    utils = [g.util for g in telemetry.gpus if g.util is not None]
    return sum(max(0.0, min(100.0, u)) / 100.0 * dt for u in utils)
