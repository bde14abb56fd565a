"""`fpmon lab compare A B`: bands, detection rates, cross matrix, calibration file, report."""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from fpmon.calibration import SCHEMA, load_calibration, pair_key, write_calibration
from fpmon.errors import FpmonError
from fpmon.lab.analysis import analyze
from fpmon.lab.report import fmt, md_table, plot_lines, short_probe, table
from fpmon.lab.results import LabResults, check_same_model, load_results


def _tok(r: LabResults, name: str) -> float | None:
    return r.setups.get(name, {}).get("timing", {}).get("per_token_ms_median")


def _jitter(values: list[float | None]) -> float | None:
    v = [x for x in values if x]
    return (max(v) - min(v)) / min(v) if len(v) >= 2 else None


def timing_of(r: LabResults) -> dict[str, Any]:
    """Per-token times unloaded and under hidden work; the declared work's busy fraction."""
    out: dict[str, Any] = {}
    for bs, names in (
        ("bs1", ["base", "base.r2", "load.none", "load.none.r2"]),
        ("bs16", ["bs16", "load.none.bs16", "load.none.bs16.r2"]),
    ):
        meds = {n: _tok(r, n) for n in names if _tok(r, n)}
        if meds:
            out[bs] = {"unloaded_per_token_ms": meds, "jitter_rel": _jitter(list(meds.values()))}
    hidden = {}
    for name, line in r.setups.items():
        if not name.startswith("load.") or name.startswith("load.none"):
            continue
        none = "load.none.bs16" if ".bs16" in name else "load.none"
        t, t0 = _tok(r, name), _tok(r, none)
        vs, first = line.get("vs_ref") or {}, line.get("vs_first")
        hidden[name] = {
            "per_token_ms": t,
            "slowdown": (t / t0) if t and t0 else None,
            "identical_to_unloaded": f"{vs.get('identical')}/{vs.get('n')}" if vs else None,
            "reproducible": f"{first['identical']}/{first['n']}" if first else None,
            "moved": list(vs.get("moved", {})),
            "nvml_util_mean": line.get("nvml", {}).get("nvml_util_mean"),
            "sidework": line.get("sidework"),
            "pressure_gib": line.get("pressure_gib"),
        }
    if hidden:
        out["hidden_work"] = hidden
    for s in r.summaries:
        if s.get("busy"):
            out["busy"] = s["busy"]
    return out


def _pair_doc(res: dict[str, Any], jitter: float | None) -> dict[str, Any]:
    ev = res["evaluation"]
    layers = res.get("bands", {})
    return {
        "prover": res["prover"],
        "reference": res["reference"],
        "bit_exact": res["honest_pairs"] > 0 and res["honest_identical"] == res["honest_pairs"],
        "honest_pairs": res["honest_pairs"],
        "honest_identical": res["honest_identical"],
        "layers": layers,
        "default": {"max_rel": max((v["max_rel"] for v in layers.values()), default=0.0)},
        "detector": {
            **res.get("detector", {}),
            "kind": "any movement in a cell honest pairs never moved, or a mean log10 ratio "
            "to the honest median over all cells above meanlog_threshold",
            "false_positives": ev.get("false_positives"),
            "honest_test_pairs": ev.get("honest_test_pairs"),
        },
        "detection": ev.get("detection", {}),
        "indistinguishable": res.get("indistinguishable", []),
        "timing": {"jitter_rel": jitter},
    }


def calibration_doc(
    a: LabResults, b: LabResults, results: list[dict[str, Any]], timing: dict[str, Any]
) -> dict[str, Any]:
    jit = [t.get("bs1", {}).get("jitter_rel") for t in timing.values() if t.get("bs1")]
    jitter = max((j for j in jit if j is not None), default=None)
    pairs = {pair_key(r["prover"], r["reference"]): _pair_doc(r, jitter) for r in results}
    return {
        "schema": SCHEMA,
        "model": a.model,
        "weights_digest": a.weights_digest,
        "generated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sources": [str(a.folder), str(b.folder)],
        "notes": [
            "max_rel bounds the relative L2 distance of any one probed position "
            "(so it also bounds a whole-probe distance)",
            "hidden.final bands are measured on its first 256 dimensions",
        ],
        "pairs": pairs,
        "timing": timing,
    }


def _label_rows(res: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    ev, seed, layers = res["evaluation"], res["seed_style"], res["per_layer"]
    headers = [
        "prover ran",
        "kind",
        "n",
        "identical to replay",
        "decode median rel (L-last)",
        "ratio to honest median",
        "seed: >1.5x",
        "detector: detected",
    ]
    honest_line = next(
        (v for v in layers.values() if v["kind"] == "honest" and v["declared"] == "base"), None
    )
    rows = []
    for line in layers.values():
        label = line["label"]
        probes = list(line["probes"])
        deep = [p for p in probes if p.startswith("keys.")][-1] if probes else None
        d = line["probes"][deep]["decode_median"] if deep else None
        h = honest_line["probes"][deep]["decode_median"] if honest_line and deep else None
        ratio = (d / h if h else (math.inf if d else 0.0)) if d is not None else None
        s = seed["by"].get(label if line["kind"] != "honest" else "honest (all)", {})
        det = ev.get("detection", {}).get(label) if line["kind"] != "honest" else None
        rows.append(
            [
                label,
                line["kind"],
                str(line["n"]),
                f"{line['identical']}/{line['n']}",
                fmt(d),
                "-" if ratio is None else ("inf" if ratio == math.inf else f"{ratio:.1f}x"),
                f"{100 * s['over_threshold']:.0f}%" if s else "-",
                "-" if det is None else f"{100 * det:.1f}%",
            ]
        )
    return headers, rows


def _matrix_md(cm: dict[str, Any]) -> str:
    cols = cm["cols"]
    headers = ["ran \\ replayed", *cols]
    rows = []
    for r in cm["rows"]:
        vals = cm["identical"][r]
        rows.append([r] + [("-" if math.isnan(vals[c]) else f"{vals[c]:.2f}") for c in cols])
    return md_table(headers, rows)


def report_md(
    a: LabResults, b: LabResults, results: list[dict[str, Any]], cal: dict[str, Any]
) -> str:
    out = [
        f"# fpmon lab compare: {a.gpu} vs {b.gpu}",
        "",
        f"- model {a.model}, weights digest `{a.weights_digest}` (identical in both folders)",
        f"- folders: `{a.folder}`, `{b.folder}`",
        "",
    ]
    for res in results:
        ev = res["evaluation"]
        out += [
            f"## prover {res['prover']} -> reference {res['reference']}",
            "",
            f"Honest pairs: {res['honest_pairs']} ({res['honest_identical']} bit-identical). "
            f"Detector held-out false positives: {ev.get('false_positives')}/"
            f"{ev.get('honest_test_pairs')}. Seed-style baseline (mean honest base distance over "
            f"all keys): {fmt(res['seed_style']['baseline_rel'])}.",
            "",
        ]
        if res.get("indistinguishable"):
            out += [
                "Bit-identical to an honest replay for some prompts (invisible to any numeric "
                f"check): {', '.join(res['indistinguishable'])}",
                "",
            ]
        h, rows = _label_rows(res)
        out += [md_table(h, rows), "", "Noise band per probe (all honest pairs):", ""]
        bands = res.get("bands", {})
        out += [
            md_table(
                ["probe", "max rel", "p99 rel", "median rel", "prefill max rel"],
                [
                    [
                        p,
                        fmt(v["max_rel"]),
                        fmt(v["p99_rel"]),
                        fmt(v["median_rel"]),
                        fmt(v["prefill_max_rel"]),
                    ]
                    for p, v in bands.items()
                ],
            ),
            "",
            "Cross matrix (share of prompts bit-identical):",
            "",
            _matrix_md(res["cross_matrix"]),
            "",
        ]
    out += ["## timing", "", "```", json.dumps(cal["timing"], indent=1, default=str), "```", ""]
    return "\n".join(out)


def plot_compare(res: dict[str, Any], path: Path) -> None:
    layers = res["per_layer"]
    base = next(
        (v for v in layers.values() if v["kind"] == "honest" and v["declared"] == "base"), None
    )
    if base is None:
        return
    probes = list(base["probes"])
    band_med = [base["probes"][p]["decode_median"] for p in probes]
    band_max = res.get("bands", {})
    lines = {
        v["label"]: [v["probes"][p]["decode_median"] for p in probes]
        for k, v in layers.items()
        if v["kind"] == "change"
    }
    plot_lines(
        path,
        f"prover {res['prover']} vs reference {res['reference']}: change vs honest noise",
        probes,
        lines,
        band_med,
        "honest median (declared base)",
        [band_max.get(p, {}).get("max_rel", 0.0) for p in probes],
    )


def run_compare(args: argparse.Namespace) -> int:
    for p in (args.out, args.report, args.json):
        if p is not None and p.exists() and not args.force:
            raise FpmonError(f"{p} exists: pass --force to overwrite it, or choose another path")
    a = load_results(args.dir_a)
    b = load_results(args.dir_b)
    check_same_model(a, b)
    same_run = args.dir_a.resolve() == args.dir_b.resolve()
    results = [analyze(a, b, same_run)]
    if not same_run:
        results.append(analyze(b, a, same_run))
    timing = {a.gpu: timing_of(a)}
    if not same_run:
        timing[b.gpu + (" (b)" if b.gpu == a.gpu else "")] = timing_of(b)
    cal = calibration_doc(a, b, results, timing)
    for extra in args.merge:
        other = load_calibration(extra)
        if other["weights_digest"] != cal["weights_digest"]:
            raise FpmonError(
                f"--merge {extra}: calibrated on other weights; merge the same model's"
            )
        for k, v in other["pairs"].items():
            cal["pairs"].setdefault(k, v)
        for k, v in other.get("timing", {}).items():
            cal["timing"].setdefault(k, v)
        cal["sources"] += [s for s in other.get("sources", []) if s not in cal["sources"]]
    write_calibration(args.out, cal, args.force)
    for res in results:
        h, rows = _label_rows(res)
        print(f"prover {res['prover']} -> reference {res['reference']}")
        print(table(h, rows))
        ev = res["evaluation"]
        print(
            f"honest pairs {res['honest_pairs']} ({res['honest_identical']} bit-identical); "
            f"held-out false positives {ev.get('false_positives')}/{ev.get('honest_test_pairs')}"
        )
    if args.report:
        args.report.write_text(report_md(a, b, results, cal))
    plot = args.plot or (args.report.with_suffix(".png") if args.report else None)
    if plot:
        plot_compare(results[0], plot)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "calibration": cal}, default=str))
    print(f"calibration: {args.out}")
    return 0


__all__ = ["run_compare", "short_probe"]
