"""`fpmon lab sweep`: where the signal is, probe by probe (every layer a run probed).

For each probe (keys of each layer, final hidden state, top-k logit values) and each change the
run holds (what the prover ran instead of the declared base), one number per prompt: the mean
over positions of the relative distance between the change's probe and the verifier's replay
of the base. Honest noise is the same number for honest pairs of the declared base: the repeat
on one GPU (`lab sweep RUN`), or the base run on the other GPU (`lab sweep RUN_A RUN_B`, the
cross-model compare). Per probe and change:

- `ratio`: median change distance / median honest distance (inf when honest pairs never moved
  that probe: then any movement is a detection, the same-GPU case);
- `separation`: smallest change distance / largest honest distance (> 1: every change pair
  lies beyond every honest pair at this probe alone);
- `rate`: share of change pairs above the largest honest distance (one probe, threshold at
  the honest maximum; on one GPU the honest maximum is 0, so `rate` = share moved);
- `proxy_ratio` (one GPU only, with `--proxy`): median change distance / the proxy change's
  median: where a change stands out from a plain GEMM-kernel rounding difference (batch size
  by default), which is what honest cross-GPU noise measured like on H100/H200 at layers
  7..27 (docs/lab/RESULTS.md). A proxy, not a measurement of cross-device noise.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fpmon.errors import FpmonError
from fpmon.lab.analysis import Pair, build_pairs
from fpmon.lab.metrics import probe_order
from fpmon.lab.results import LabResults, check_same_model, load_results

SWEEP_KIND = "fpmon.lab.sweep"


def pair_distance(p: Pair, probe: str) -> float:
    return float(np.mean(p.cells[probe]))


def _ratio(a: float, b: float) -> float:
    """a / b; against zero noise: inf if the change moved at all, else 0 (nothing to see)."""
    if b > 0:
        return a / b
    return math.inf if a > 0 else 0.0


def sweep(x: LabResults, y: LabResults, same_run: bool, proxy: str = "") -> dict[str, Any]:
    pairs = build_pairs(x, y, same_run)
    honest = [p for p in pairs if p.kind == "honest" and p.declared == "base"]
    changes = [p for p in pairs if p.kind == "change"]
    if not honest:
        raise FpmonError(
            f"{x.folder}: no honest pairs of the base setup (run the `repeat` experiment, or "
            "give a second run folder of the same model on another GPU)"
        )
    probes = sorted(honest[0].cells, key=probe_order)
    noise: dict[str, Any] = {}
    for k in probes:
        d = np.array([pair_distance(p, k) for p in honest])
        noise[k] = {
            "median": float(np.median(d)),
            "p99": float(np.percentile(d, 99)),
            "max": float(np.max(d)),
            "moved": int(np.sum(d > 0)),
            "n": len(d),
        }
    labels = sorted({p.label for p in changes})
    by_label = {lab: [p for p in changes if p.label == lab] for lab in labels}
    medians = {
        lab: {k: float(np.median([pair_distance(p, k) for p in ps])) for k in probes}
        for lab, ps in by_label.items()
    }
    use_proxy = same_run and proxy in by_label
    out_changes: dict[str, Any] = {}
    for lab, ps in by_label.items():
        row: dict[str, Any] = {}
        for k in probes:
            d = np.array([pair_distance(p, k) for p in ps])
            hmax, hmed = noise[k]["max"], noise[k]["median"]
            cell = {
                "median": medians[lab][k],
                "min": float(np.min(d)),
                "ratio": _ratio(medians[lab][k], hmed),
                "separation": _ratio(float(np.min(d)), hmax),
                "rate": float(np.mean(d > hmax)),
                "moved": int(np.sum(d > 0)),
                "n": len(d),
            }
            if use_proxy:
                cell["proxy_ratio"] = _ratio(medians[lab][k], medians[proxy][k])
            row[k] = cell
        moved = [k for k in probes if row[k]["moved"]]
        best = max(
            moved,
            key=lambda k: (row[k]["rate"], row[k]["separation"], row[k]["ratio"]),
            default="",
        )
        out_changes[lab] = {
            "n": len(ps),
            "identical": int(sum(p.identical for p in ps)),
            "best_probe": best,
            "first_moved": moved[0] if moved else "",
            "probes": row,
        }
    return {
        "kind": SWEEP_KIND,
        "prover": x.gpu,
        "reference": y.gpu,
        "same_run": same_run,
        "honest_source": "repeat on the same GPU" if same_run else "base on the other GPU",
        "proxy": proxy if use_proxy else "",
        "model": x.model,
        "weights_digest": x.weights_digest,
        "prompts_digest": x.prompts_digest,
        "probes": probes,
        "noise": noise,
        "changes": out_changes,
    }


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "∞"
    if x == 0:
        return "0"
    return f"{x:.3g}"


def report_md(res: dict[str, Any]) -> str:
    """Per probe: honest noise, then each change's median distance and its ratio."""
    labels = list(res["changes"])
    cross = "" if res["same_run"] else f" → {res['reference']}"
    lines = [
        f"# Probe sweep: {res['model']} on {res['prover']}{cross}",
        "",
        f"Honest noise: {res['honest_source']}. Cell: median distance (mean relative distance "
        "over positions, median over prompts) and, in brackets, its ratio to the honest median "
        "(∞: honest pairs never moved this probe)"
        + (
            f"; then /{res['proxy']}: the ratio to the proxy change's median"
            if res["proxy"]
            else ""
        )
        + ". Share moved: prompts whose probe differs at all.",
        "",
        "| probe | honest median / max | " + " | ".join(labels) + " |",
        "|---|---|" + "---|" * len(labels),
    ]
    for k in res["probes"]:
        n = res["noise"][k]
        cells = []
        for lab in labels:
            c = res["changes"][lab]["probes"][k]
            text = f"{_fmt(c['median'])} ({_fmt(c['ratio'])})"
            if "proxy_ratio" in c and lab != res["proxy"]:
                text += f" /{_fmt(c['proxy_ratio'])}"
            text += f" {c['moved']}/{c['n']}"
            cells.append(text)
        lines.append(
            f"| {k} | {_fmt(n['median'])} / {_fmt(n['max'])} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        "| change | first probe moved | best probe | its rate | its separation |",
        "|---|---|---|---|---|",
    ]
    for lab, ch in res["changes"].items():
        if not ch["best_probe"]:
            lines.append(f"| {lab} | none (bit-identical to the base everywhere) | - | 0% | - |")
            continue
        b = ch["probes"][ch["best_probe"]]
        lines.append(
            f"| {lab} | {ch['first_moved'] or 'none'} | {ch['best_probe']} | "
            f"{b['rate']:.0%} | {_fmt(b['separation'])} |"
        )
    return "\n".join(lines) + "\n"


def run_sweep(
    a: Path, b: Path | None, proxy: str, json_out: Path | None, report: Path | None
) -> int:
    x = load_results(a)
    y = load_results(b) if b is not None else x
    if b is not None:
        check_same_model(x, y)
    res = sweep(x, y, b is None, proxy)
    text = report_md(res)
    print(text)
    if json_out:
        json_out.write_text(json.dumps(res, indent=1, default=str))
    if report:
        report.write_text(text)
    return 0
