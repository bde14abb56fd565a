"""One machine's results, setup against reference: identity, moved probes, distances, time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from fpmon.lab.metrics import entry_cells, full_hidden_rel, moved_probes, probe_order
from fpmon.lab.store import Entry

FULL_HIDDEN = "hidden.final(full)"


def by_prompt(entries: Iterable[Entry]) -> dict[int, Entry]:
    return {e.prompt: e for e in entries}


def pair_stats(a: dict[int, Entry], b: dict[int, Entry]) -> dict[str, Any]:
    """a against b over the prompts both hold: identical count, per-probe moves and distances.

    Distances per probe: position 0 (the prefill) and positions 1.. (decode steps) apart, each
    the median and the max over prompts and positions of the relative distance.
    """
    common = sorted(set(a) & set(b))
    moved: dict[str, int] = {}
    cells: dict[str, list[np.ndarray]] = {}
    identical = 0
    for p in common:
        ea, eb = a[p], b[p]
        if ea.identical_to(eb):
            identical += 1
        for name in moved_probes(ea, eb):
            moved[name] = moved.get(name, 0) + 1
        c = entry_cells(ea, eb)
        full = full_hidden_rel(ea, eb)
        if full is not None:
            c[FULL_HIDDEN] = full
        for name, v in c.items():
            cells.setdefault(name, []).append(v)
    rel = {}
    for name in sorted(cells, key=probe_order):
        m = np.stack(cells[name])
        pre, dec = m[:, 0], m[:, 1:]
        rel[name] = {
            "prefill_median": float(np.median(pre)),
            "prefill_max": float(np.max(pre)),
            "decode_median": float(np.median(dec)) if dec.size else 0.0,
            "decode_max": float(np.max(dec)) if dec.size else 0.0,
        }
    return {
        "n": len(common),
        "identical": identical,
        "moved": dict(sorted(moved.items(), key=lambda kv: probe_order(kv[0]))),
        "rel": rel,
    }


def timing_stats(entries: list[Entry], decode_steps: int) -> dict[str, Any]:
    """Per-token decode time and prefill time, one sample per batch (rows share a batch)."""
    batches = sorted({(e.prefill_s, e.decode_s) for e in entries})
    if not batches:
        return {}
    tok = np.array([d / max(decode_steps, 1) for _p, d in batches]) * 1e3
    pre = np.array([p for p, _d in batches]) * 1e3
    return {
        "batches": len(batches),
        "per_token_ms_median": float(np.median(tok)),
        "per_token_ms_p10": float(np.percentile(tok, 10)),
        "per_token_ms_p90": float(np.percentile(tok, 90)),
        "per_token_ms_mean": float(np.mean(tok)),
        "prefill_ms_median": float(np.median(pre)),
    }


def summarize(
    name: str, ref: str, results: dict[str, list[Entry]], decode_steps: int
) -> dict[str, Any]:
    """A setup's line of the summary: against its reference and, for `.r2`, its first run."""
    mine = by_prompt(results[name])
    out: dict[str, Any] = {"n": len(mine), "timing": timing_stats(results[name], decode_steps)}
    if ref and ref in results:
        out["vs_ref"] = pair_stats(mine, by_prompt(results[ref]))
    first = name.removesuffix(".r2")
    if first != name and first in results:
        out["vs_first"] = pair_stats(mine, by_prompt(results[first]))
    return out
