"""Two machines' results side by side: honest pairs, cheat pairs, bands and the detector.

A pair is (what the prover ran on GPU X, what the verifier replays on GPU Y for the declared
setup). Honest: the prover ran what it declared (on another GPU, or with the verifier's fillers
in place of co-batched requests). Change: the prover ran another setup and declared the base.
Hidden: the prover ran the declared setup with hidden work beside it.

The detector uses every probed cell (probe x position) of the declared setup's honest pairs.
Cells that honest pairs never moved (bit-exact ones) must not move at all. Elsewhere the score
is the mean over all cells of log10(distance / honest median distance of that cell): rounding
noise of one cell is as large as a subtle change, but averaged over every layer and position
the honest noise is tight while a real change shifts the whole pattern. Its threshold is chosen
on honest pairs only (largest honest score plus half its spread above the median); rates are
measured on held-out prompts (two folds by prompt parity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fpmon.lab.metrics import entry_cells, probe_order, whole_rel
from fpmon.lab.results import LabResults
from fpmon.lab.store import Entry
from fpmon.records import TOPK_IDS

EPS = 1e-9
SEED_THRESHOLD = 1.5  # the seed study's "1.5x the cross-hardware baseline"


@dataclass
class Pair:
    kind: str  # honest | change | hidden
    label: str  # what the prover ran (for honest: declared == ran)
    declared: str
    prompt: int
    cells: dict[str, np.ndarray]
    identical: bool
    whole: float


def _make(kind: str, label: str, declared: str, x: Entry, y: Entry) -> Pair:
    cells = {k: v for k, v in entry_cells(x, y).items() if k != TOPK_IDS}
    keys = sorted((k for k in x.probes if k.startswith("keys.")), key=probe_order)
    return Pair(kind, label, declared, x.prompt, cells, x.identical_to(y), whole_rel(x, y, keys))


def _pairs(
    kind: str, label: str, declared: str, xs: dict[int, Entry], ys: dict[int, Entry]
) -> list[Pair]:
    return [_make(kind, label, declared, xs[p], ys[p]) for p in sorted(set(xs) & set(ys))]


def is_declarable(name: str) -> bool:
    return not name.startswith("load.") and name != "warmup"


def build_pairs(x: LabResults, y: LabResults, same_run: bool) -> list[Pair]:
    """Pairs for prover machine x and reference machine y."""
    out: list[Pair] = []
    ex, ey = x.entries, y.entries
    if same_run:  # one folder: honest pairs are its repeats (and its runs in other processes)
        for a, b, declared in (
            ("base", "base.r2", "base"),
            ("load.none", "load.none.r2", "base"),
            ("base", "load.none", "base"),
            ("bs16", "load.none.bs16", "bs16"),
            ("load.none.bs16", "load.none.bs16.r2", "bs16"),
        ):
            if a in ex and b in ey:
                out += _pairs("honest", a if a == b else f"{a} vs {b}", declared, ex[a], ey[b])
        ref_base = "base.r2" if "base.r2" in ey else "base"
    else:
        for s in sorted(set(ex) & set(ey)):
            if is_declarable(s):
                out += _pairs("honest", s, s, ex[s], ey[s])
        ref_base = "base"
    # The prover ran a real batch of 4; the verifier replays it among fillers.
    for variant in ("bs4.fill", "bs4.rot"):
        if "bs4" in ex and variant in ey:
            out += _pairs("honest", f"bs4 (replayed as {variant})", "bs4", ex["bs4"], ey[variant])
    for s, line in x.setups.items():
        if line.get("change") and s in ex and ref_base in ey:
            out += _pairs("change", s, "base", ex[s], ey[ref_base])
    for s in ex:
        if s.startswith("load.") and not s.startswith("load.none") and not s.endswith(".r2"):
            ref = "bs16" if ".bs16" in s else "base"
            if ref in ey:
                out += _pairs("hidden", s, ref, ex[s], ey[ref])
    return out


@dataclass
class Detector:
    probes: list[str]
    band: dict[str, np.ndarray]  # per-position max honest rel
    median: dict[str, np.ndarray]  # per-position median honest rel
    max_threshold: float
    meanlog_threshold: float

    def max_score(self, p: Pair) -> float:
        """Largest movement in a cell that no honest calibration pair ever moved (inf if any)."""
        for k in self.probes:
            frozen = self.band[k] == 0
            if np.any(p.cells[k][frozen] > 0):
                return float("inf")
        return 0.0

    def meanlog_score(self, p: Pair) -> float:
        logs = [np.log10((p.cells[k] + EPS) / (self.median[k] + EPS)) for k in self.probes]
        return float(np.mean(np.concatenate(logs)))

    def flags(self, p: Pair) -> bool:
        return (
            self.max_score(p) > self.max_threshold or self.meanlog_score(p) > self.meanlog_threshold
        )


def _threshold(scores: list[float]) -> float:
    """Chosen on honest pairs only: their largest score plus half its spread above the median
    (a margin, since held-out honest pairs reach a little beyond the calibration's maximum)."""
    top, mid = max(scores), float(np.median(scores))
    return top + 0.5 * (top - mid)


def fit_detector(honest: list[Pair]) -> Detector:
    probes = sorted(honest[0].cells, key=probe_order)
    stack = {k: np.stack([p.cells[k] for p in honest]) for k in probes}
    det = Detector(
        probes,
        {k: v.max(axis=0) for k, v in stack.items()},
        {k: np.median(v, axis=0) for k, v in stack.items()},
        0.0,
        0.0,
    )
    det.max_threshold = 0.0  # frozen cells: any movement at all flags
    det.meanlog_threshold = _threshold([det.meanlog_score(p) for p in honest])
    return det


def evaluate(pairs: list[Pair]) -> dict[str, Any]:
    """Detection per declared setup, cross-fitted: a detector fitted on the honest pairs of that
    declared setup for even prompts judges odd prompts, and back."""
    flagged: dict[str, list[bool]] = {}
    fp: dict[str, int] = {}
    n_test: dict[str, int] = {}
    thresholds: dict[str, Any] = {}
    for declared in sorted({p.declared for p in pairs if p.kind == "honest"}):
        honest = [p for p in pairs if p.kind == "honest" and p.declared == declared]
        others = [p for p in pairs if p.kind != "honest" and p.declared == declared]
        for fold in (0, 1):
            train = [p for p in honest if p.prompt % 2 == fold]
            if not train:
                continue
            det = fit_detector(train)
            thresholds.setdefault(declared, []).append(
                {"max_cell": det.max_threshold, "meanlog": det.meanlog_threshold}
            )
            for p in honest + others:
                if p.prompt % 2 == fold:
                    continue
                f = det.flags(p)
                if p.kind == "honest":
                    n_test[declared] = n_test.get(declared, 0) + 1
                    fp[declared] = fp.get(declared, 0) + int(f)
                else:
                    flagged.setdefault(p.label, []).append(f)
    return {
        "honest_test_pairs": sum(n_test.values()),
        "false_positives": sum(fp.values()),
        "false_positives_by_declared": {k: f"{fp.get(k, 0)}/{n}" for k, n in n_test.items()},
        "detection": {k: float(np.mean(v)) for k, v in flagged.items()},
        "n": {k: len(v) for k, v in flagged.items()},
        "fold_thresholds": thresholds,
    }


def seed_style(pairs: list[Pair]) -> dict[str, Any]:
    """One relative L2 over all keys, as a ratio to the mean honest base-vs-base distance."""
    base = [p.whole for p in pairs if p.kind == "honest" and p.declared == "base"]
    honest = [p.whole for p in pairs if p.kind == "honest"]
    baseline = float(np.mean(base)) if base else float(np.mean(honest)) if honest else 0.0

    def ratio(d: float) -> float:
        if baseline > 0:
            return d / baseline
        return float("inf") if d > 0 else 0.0

    out: dict[str, Any] = {"baseline_rel": baseline, "threshold": SEED_THRESHOLD, "by": {}}
    groups: dict[str, list[float]] = {}
    for p in pairs:
        groups.setdefault(p.label if p.kind != "honest" else "honest (all)", []).append(
            ratio(p.whole)
        )
    for label, rs in groups.items():
        arr = np.array(rs)
        out["by"][label] = {
            "median_ratio": float(np.median(arr)),
            "over_threshold": float(np.mean(arr > SEED_THRESHOLD)),
            "n": len(rs),
        }
    return out


def per_layer(pairs: list[Pair]) -> dict[str, Any]:
    """Median over prompts of each probe's prefill and decode distance, by label."""
    out: dict[str, Any] = {}
    labels = sorted({(p.kind, p.label) for p in pairs})
    for kind, label in labels:
        ps = [p for p in pairs if p.kind == kind and p.label == label]
        probes = sorted(ps[0].cells, key=probe_order)
        row = {}
        for k in probes:
            m = np.stack([p.cells[k] for p in ps])
            row[k] = {
                "prefill_median": float(np.median(m[:, 0])),
                "decode_median": float(np.median(m[:, 1:])) if m.shape[1] > 1 else 0.0,
                "max": float(np.max(m)),
            }
        out[f"{kind}:{label}"] = {
            "kind": kind,
            "label": label,
            "declared": ps[0].declared,
            "n": len(ps),
            "identical": int(sum(p.identical for p in ps)),
            "probes": row,
        }
    return out


def bands(honest: list[Pair]) -> dict[str, Any]:
    """The calibration's per-probe band from every honest pair."""
    out = {}
    probes = sorted(honest[0].cells, key=probe_order)
    for k in probes:
        m = np.stack([p.cells[k] for p in honest])
        out[k] = {
            "max_rel": float(np.max(m)),
            "p99_rel": float(np.percentile(m, 99)),
            "median_rel": float(np.median(m)),
            "prefill_max_rel": float(np.max(m[:, 0])),
            "per_position_max_rel": [float(v) for v in m.max(axis=0)],
        }
    return out


def cross_matrix(x: LabResults, y: LabResults) -> dict[str, Any]:
    """For every (setup run on x, setup replayed on y): share of prompts bit-identical."""
    names = [s for s in x.entries if is_declarable(s)]
    ynames = [s for s in y.entries if is_declarable(s)]
    m: dict[str, dict[str, float]] = {}
    for a in names:
        m[a] = {}
        for b in ynames:
            common = set(x.entries[a]) & set(y.entries[b])
            same = sum(x.entries[a][p].identical_to(y.entries[b][p]) for p in common)
            m[a][b] = same / len(common) if common else float("nan")
    return {"rows": names, "cols": ynames, "identical": m}


def analyze(x: LabResults, y: LabResults, same_run: bool) -> dict[str, Any]:
    pairs = build_pairs(x, y, same_run)
    honest = [p for p in pairs if p.kind == "honest"]
    out: dict[str, Any] = {
        "prover": x.gpu,
        "reference": y.gpu,
        "honest_pairs": len(honest),
        "honest_identical": int(sum(p.identical for p in honest)),
        "evaluation": evaluate(pairs),
        "seed_style": seed_style(pairs),
        "per_layer": per_layer(pairs),
        "cross_matrix": cross_matrix(x, y),
    }
    if honest:
        out["bands"] = bands(honest)
        full = fit_detector([p for p in honest if p.declared == "base"] or honest)
        out["detector"] = {
            "max_cell_threshold": full.max_threshold,
            "meanlog_threshold": full.meanlog_threshold,
        }
        # Cheats that land bit-exactly on an honest replay: no numeric check can see them.
        out["indistinguishable"] = sorted(
            {p.label for p in pairs if p.kind != "honest" and p.identical}
        )
    return out
