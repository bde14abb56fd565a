"""CPU time as activity, for nodes whose engine runs on the CPU (no GPU to account).

Observed: the engine process's CPU-seconds (user + system, its children included) between two
telemetry samples (`Telemetry.engine.cpu_s`, agents/telemetry.py `EngineProcess`). Explained:
the reference's own process CPU time around each faithful replay, per token (`measure`), times
the node's committed tokens; replay/accounting.py judges the two like a GPM metric.

CPU time, not wall time: on a shared host, co-located processes stretch every request's wall
time, while the CPU-seconds a token costs stay close to steady (the demo fleet puts eight
processes on two cores). Process CPU time counts torch's intra-op threads, which a thread's
own clock would miss; it also counts OpenMP threads spinning between parallel regions, so the
honest ratio holds only while the node and the reference run the same thread count (`[engine]
threads`; the demo runs one thread each).

A sample that cannot be right is refused and counted, never accounted and never an alert by
itself: CPU time going backwards, more CPU-seconds than the host's cores had, no core count.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fpmon.wire import Telemetry

# The longest interval between two samples whose CPU time is accounted: a longer gap (or a
# clock step) is not spread back over the window, like GPU activity (no back-filling).
MAX_SPAN_S = 5.0
# Slack on the core-count bound: a sample's clock and its CPU time are read a little apart.
SLACK_S = 0.25


@dataclass(frozen=True)
class Delta:
    cpu_s: float  # engine CPU-seconds in the interval
    span_s: float  # the interval's wall time, by the node's sample times


@dataclass(frozen=True)
class _Last:
    pid: int
    cpu_s: float
    t: float


class EngineClock:
    """Per node: the engine's CPU time between consecutive telemetry samples."""

    def __init__(self) -> None:
        self._last: dict[str, _Last] = {}

    def step(self, node: str, t: Telemetry) -> Delta | str | None:
        """The interval since this node's last sample: a Delta, a reason it is refused, or
        None (nothing to account: no earlier sample, a new engine process, a gap)."""
        e = t.engine
        if e is None or e.cpu_s is None:
            self._last.pop(node, None)
            return None
        prev = self._last.get(node)
        self._last[node] = _Last(e.pid, e.cpu_s, t.t)
        if prev is None or prev.pid != e.pid:
            return None  # first sample, or a restarted engine: its clock starts over
        # The node's own sample times, like its CPU time: the verifier's arrival times bunch
        # when two samples are handled in one step.
        span = t.t - prev.t
        if not 0 < span <= MAX_SPAN_S:
            return None
        d = e.cpu_s - prev.cpu_s
        if d < 0:
            # A child that exits takes its CPU time with it (agents/telemetry.py): honest,
            # but the interval's CPU time cannot be known.
            return "engine cpu_s went backwards"
        cpus = t.host.cpus
        if cpus <= 0:
            return "host cpus not reported: engine CPU time cannot be bounded"
        if d > cpus * (span + SLACK_S):
            return "engine cpu_s rose more than the host's cores allow"
        return Delta(d, span)


@contextmanager
def measure() -> Iterator[dict[str, float]]:
    """This process's CPU time over the block (all threads: torch's intra-op pool too), in
    the yielded map under "cpu_s" once the block ends."""
    out: dict[str, float] = {}
    t0 = time.process_time()
    yield out
    out["cpu_s"] = time.process_time() - t0
