"""Compare two records probe by probe: bitwise, L2, relative L2, max ULP, per position."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fpmon.errors import FpmonError
from fpmon.records import TOPK_IDS, TOPK_VALUES, Record
from fpmon.tensors import Blob


@dataclass
class ProbeDiff:
    probe: str
    identical: bool
    l2: float
    rel: float
    max_ulp: int  # -1 when the two sides have different dtypes
    n_diff: int
    n: int
    per_position_rel: list[float] = field(default_factory=list)

    @property
    def layer(self) -> int | None:
        if self.probe.startswith("keys.L"):
            return int(self.probe.removeprefix("keys.L"))
        return None


@dataclass
class Comparison:
    identical: bool
    probes: list[ProbeDiff]
    notes: list[str] = field(default_factory=list)

    def to_map(self) -> dict[str, Any]:
        return {
            "identical": self.identical,
            "notes": self.notes,
            "probes": [asdict(p) | {"layer": p.layer} for p in self.probes],
        }

    def differing(self) -> list[ProbeDiff]:
        return [p for p in self.probes if not p.identical]


def _probe_order(name: str) -> tuple[int, int, str]:
    if name.startswith("keys.L"):
        return (0, int(name.removeprefix("keys.L")), name)
    return (1, 0, name)


def diff_blobs(name: str, a: Blob, b: Blob) -> ProbeDiff:
    if a.shape != b.shape:
        raise FpmonError(
            f"probe {name} has shape {a.shape} in one fingerprint and {b.shape} in the other: "
            "compare captures made with the same probes and decode steps"
        )
    identical = a.data == b.data
    n = int(np.prod(a.shape)) if a.shape else 1
    if name == TOPK_IDS:
        ra, rb = a.raw(), b.raw()
        n_diff = int(np.count_nonzero(ra != rb))
        rows = ra.reshape(ra.shape[0], -1) if ra.ndim else ra.reshape(1, 1)
        rrows = rb.reshape(rows.shape)
        per = [float(np.mean(x != y)) for x, y in zip(rows, rrows, strict=True)]
        return ProbeDiff(name, identical, float(n_diff), n_diff / max(n, 1), 0, n_diff, n, per)
    if identical:
        n_rows = a.shape[0] if a.shape else 1
        return ProbeDiff(name, True, 0.0, 0.0, 0, 0, n, [0.0] * n_rows)
    fa, fb = a.as_float64(), b.as_float64()
    d = fa - fb
    l2 = float(np.linalg.norm(d))
    ref = float(np.linalg.norm(fb))
    rel = l2 / ref if ref > 0 else (0.0 if l2 == 0 else float("inf"))
    if a.dtype == b.dtype:
        ulp = int(np.max(np.abs(a.ordered_ints() - b.ordered_ints())))
        n_diff = int(np.count_nonzero(a.raw() != b.raw()))
    else:  # ULPs of different formats are not comparable
        ulp = -1
        n_diff = int(np.count_nonzero(fa != fb))
    da = d.reshape(d.shape[0], -1) if d.ndim > 1 else d.reshape(-1, 1)
    fr = fb.reshape(da.shape)
    per = [
        float(np.linalg.norm(x) / max(float(np.linalg.norm(y)), 1e-30))
        for x, y in zip(da, fr, strict=True)
    ]
    return ProbeDiff(name, False, l2, rel, ulp, n_diff, n, per)


def compare_records(a: Record, b: Record) -> Comparison:
    if a.weights_digest != b.weights_digest:
        raise FpmonError(
            f"the fingerprints come from different models (weights {a.weights_digest[:12]}… vs "
            f"{b.weights_digest[:12]}…): compare captures of the same model"
        )
    if a.prompt_ids != b.prompt_ids:
        raise FpmonError(
            "the fingerprints are of different prompts: compare captures of the same prompt"
        )
    notes = []
    if a.output_ids != b.output_ids:
        first = next(
            (i for i, (x, y) in enumerate(zip(a.output_ids, b.output_ids, strict=False)) if x != y),
            min(len(a.output_ids), len(b.output_ids)),
        )
        notes.append(
            f"greedy outputs diverge at token {first}: later decode positions compare different "
            "text, not only rounding (replay teacher-forced to compare like with like)"
        )
    missing = sorted(set(a.probes) ^ set(b.probes))
    if missing:
        raise FpmonError(
            f"probes {', '.join(missing)} exist in only one fingerprint: capture both with the "
            "same --layers"
        )
    diffs = [
        diff_blobs(name, a.probes[name], b.probes[name])
        for name in sorted(a.probes, key=_probe_order)
    ]
    return Comparison(all(p.identical for p in diffs), diffs, notes)


def greedy_violations(record: Record) -> list[int]:
    """Positions whose output token is not the greedy choice of the record's own logits.

    Teacher-forced replay feeds the recorded tokens on both sides, so it checks the computation
    but not that the served tokens came from it: this closes that gap for greedy decoding.
    A token tied with the top logit counts as greedy (argmax and top-k may break ties apart).
    """
    ids, vals = record.probes.get(TOPK_IDS), record.probes.get(TOPK_VALUES)
    if ids is None or vals is None:
        return []
    top_ids, top_vals = ids.raw(), vals.as_float64()
    bad = []
    for pos, token in enumerate(record.output_ids[: len(top_ids)]):
        best = top_vals[pos].max()
        tied = {int(i) for i, v in zip(top_ids[pos], top_vals[pos], strict=True) if v == best}
        if token not in tied:
            bad.append(pos)
    return bad
