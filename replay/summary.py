"""Per-node summaries for the `state` snapshot (zguide Clone): what a late monitor starts from."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import cast

from fpmon.replay.intake import Intake
from fpmon.replay.sampling import Sampler
from fpmon.replay.store import Store
from fpmon.wire import CapacityWindow, ChallengeSummary, NodeSummary, Telemetry
from fpmon.wire.messages import Status

VERIFIED = ("match", "within_noise", "mismatch")  # replayed and judged on the numerics


def node_summaries(
    intake: Intake,
    store: Store,
    sampler: Sampler,
    shed: Counter[str],
    accounting: Callable[[str], str] | None = None,
    window: Callable[[str], CapacityWindow | None] | None = None,
    challenges: Callable[[str], ChallengeSummary | None] | None = None,
) -> dict[str, NodeSummary]:
    counts = store.verdict_counts()
    last = store.last_verdict_t()
    out = {}
    for node, st in intake.stats.items():
        ch = intake.chains.nodes[node]
        c = counts.get(node, {})
        verified = sum(c.get(s, 0) for s in VERIFIED)
        tele = st.last_telemetry
        out[node] = NodeSummary(
            commits=st.commits,
            sampled=st.sampled,
            verified=verified,
            coverage=verified / st.commits if st.commits else 0.0,
            verdicts=cast(dict[Status, int], c),  # the store holds only statuses it was given
            last_verdict_t=last.get(node, 0.0),
            chain_head_seq=ch.seq,
            signed_head_seq=ch.head_seq,
            last_telemetry=tele,
            last_telemetry_t=st.last_telemetry_t,
            rejects=dict(st.rejects),
            shed=shed.get(node, 0),
            suspect=sampler.is_suspect(node),
            sample_rate=sampler.rate_for(node),
            capacity=_capacity(node, tele, accounting),
            accounting=window(node) if window is not None else None,
            challenges=challenges(node) if challenges is not None else None,
        )
    return out


def _capacity(node: str, tele: Telemetry | None, accounting: Callable[[str], str] | None) -> str:
    """Whether the node's activity (its GPUs', or a CPU engine's CPU time) is accounted, and
    the last window's figures."""
    if tele is None:
        return "not checked: no telemetry yet"
    if not tele.gpus and (tele.engine is None or tele.engine.cpu_s is None):
        why = tele.scope or "gpus: []"
        return f"not checked: the node reports no GPUs ({why}) and no engine CPU time"
    last = accounting(node) if accounting is not None else ""
    return f"checked: {last}" if last else "checked: first window not complete"
