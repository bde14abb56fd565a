"""The detector and pair logic on synthetic machines: honest noise vs real changes."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from fpmon.errors import FpmonError
from fpmon.lab.analysis import analyze
from fpmon.lab.results import LabResults, check_same_model
from fpmon.lab.store import Entry
from fpmon.tensors import Blob

P, D, N = 5, 64, 16  # positions, dims, prompts


def bf16(x: np.ndarray) -> Blob:
    words = (x.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    return Blob("bfloat16", x.shape, words.tobytes())


def machine(gpu: str, noise: float, seed: int, setups: dict[str, float]) -> LabResults:
    """setups: name -> size of its own deviation. Same 'truth' on every machine."""
    truth = np.random.default_rng(0).normal(size=(N, 2, P, D))
    rng = np.random.default_rng(seed)
    entries: dict[str, dict[int, Entry]] = {}
    for name, dev in setups.items():
        shift = np.random.default_rng(zlib.crc32(name.encode())).normal(size=(N, 2, P, D))
        entries[name] = {}
        for p in range(N):
            vals = truth[p] + dev * shift[p]
            if noise:
                vals = vals + noise * rng.normal(size=vals.shape)
            probes = {"keys.L0": bf16(vals[0]), "keys.L1": bf16(vals[1])}
            entries[name][p] = Entry.from_probes(name, p, 1, 0, 0.0, 0.0, probes)
    lines = {n: {"change": n not in ("base", "base.r2")} for n in setups}
    return LabResults(Path(gpu), gpu, "m", "w", "pd", lines, entries)


SETUPS = {"base": 0.0, "base.r2": 0.0, "bs8": 0.05, "tiny": 0.0005}


def test_cross_hardware_detector_separates_and_reports_fp():
    a = machine("A", 0.003, 1, SETUPS)
    b = machine("B", 0.003, 2, SETUPS)
    res = analyze(a, b, same_run=False)
    ev = res["evaluation"]
    assert ev["detection"]["bs8"] == 1.0  # far outside the band
    assert ev["detection"]["tiny"] < 0.5  # inside the honest noise: physics forbids
    assert ev["honest_test_pairs"] == 4 * N  # 4 declarable setups, every prompt once
    assert res["bands"]["keys.L0"]["max_rel"] > 0
    assert set(res["cross_matrix"]["rows"]) == set(SETUPS)


def test_same_run_demands_bit_exactness():
    a = machine("A", 0.0, 1, SETUPS)
    res = analyze(a, a, same_run=True)
    assert res["honest_identical"] == res["honest_pairs"] == N
    assert res["bands"]["keys.L1"]["max_rel"] == 0.0
    assert res["evaluation"]["detection"]["tiny"] == 1.0  # any move beyond bit-exact
    assert res["evaluation"]["false_positives"] == 0


def test_different_weights_refused():
    a = machine("A", 0.0, 1, {"base": 0.0})
    b = machine("B", 0.0, 1, {"base": 0.0})
    b.weights_digest = "other"
    with pytest.raises(FpmonError, match="same model and weights"):
        check_same_model(a, b)
