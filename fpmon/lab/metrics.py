"""Distances between two entries, probe by probe and position by position.

A "cell" is one (probe, position): the last prompt token (position 0, computed by the prefill)
or one decode step. The relative distance of a cell is ||a - b|| / ||b|| over that row; the
top-k ids count the share of differing ids. Distances use the kept bytes; identity uses the
digests of the full probes.
"""

from __future__ import annotations

import numpy as np

from fpmon.lab.store import Entry
from fpmon.records import TOPK_IDS
from fpmon.tensors import Blob


def probe_order(name: str) -> tuple[int, int, str]:
    if name.startswith("keys.L"):
        return (0, int(name.removeprefix("keys.L")), name)
    return (1, 0, name)


def _rows(b: Blob) -> np.ndarray:
    f = b.as_float64() if b.dtype != "int64" else b.raw().astype(np.float64)
    return f.reshape(f.shape[0], -1) if f.ndim > 1 else f.reshape(-1, 1)


def cell_rel(a: Blob, b: Blob, name: str) -> np.ndarray:
    """Per-position relative distance (share of differing ids for top-k ids)."""
    if a.data == b.data and a.dtype == b.dtype:
        return np.zeros(a.shape[0] if a.shape else 1)
    ra, rb = _rows(a), _rows(b)
    if name == TOPK_IDS:
        return np.mean(ra != rb, axis=1)
    num = np.linalg.norm(ra - rb, axis=1)
    den = np.maximum(np.linalg.norm(rb, axis=1), 1e-30)
    return num / den


def entry_cells(a: Entry, b: Entry) -> dict[str, np.ndarray]:
    """{probe: per-position relative distance} for the probes both entries kept."""
    names = sorted(set(a.probes) & set(b.probes), key=probe_order)
    return {n: cell_rel(a.probes[n], b.probes[n], n) for n in names}


def moved_probes(a: Entry, b: Entry) -> list[str]:
    """Names of full probes whose bytes differ (by digest)."""
    return sorted((k for k in a.digests if a.digests.get(k) != b.digests.get(k)), key=probe_order)


def full_hidden_rel(a: Entry, b: Entry) -> np.ndarray | None:
    if a.full_hidden is None or b.full_hidden is None:
        return None
    return cell_rel(a.full_hidden, b.full_hidden, "hidden.final")


def whole_rel(a: Entry, b: Entry, names: list[str]) -> float:
    """One relative L2 over the concatenation of these probes at every position (the seed
    study's single-number distance)."""
    da = np.concatenate([_rows(a.probes[n]).ravel() for n in names])
    db = np.concatenate([_rows(b.probes[n]).ravel() for n in names])
    den = float(np.linalg.norm(db))
    return float(np.linalg.norm(da - db)) / den if den > 0 else 0.0
