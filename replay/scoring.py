"""Compact, comparable summaries of a Comparison: per-probe evidence and one nearness score."""

from __future__ import annotations

from typing import Any

from fpmon.compare import Comparison
from fpmon.records import TOPK_IDS
from fpmon.wire import ProbeEvidence


def score(comp: Comparison) -> float:
    """Mean relative distance over float probes (0 = bit-identical); lower is nearer."""
    vals = [p.rel for p in comp.probes if p.probe != TOPK_IDS]
    return sum(vals) / len(vals) if vals else 0.0


def probe_evidence(comp: Comparison, band: Any = None) -> list[ProbeEvidence]:
    return [
        ProbeEvidence(
            probe=p.probe,
            layer=p.layer,
            identical=p.identical,
            rel=p.rel,
            max_pos_rel=max(p.per_position_rel, default=0.0),
            max_ulp=p.max_ulp,
            n_diff=p.n_diff,
            n=p.n,
            per_position_rel=[float(f"{x:.3g}") for x in p.per_position_rel],
            band=band.limit(p.probe) if band is not None else None,
        )
        for p in comp.probes
    ]


def first_difference(comp: Comparison) -> str:
    d = comp.differing()
    return d[0].probe if d else ""
