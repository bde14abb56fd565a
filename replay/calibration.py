"""Noise bands per (prover GPU, reference GPU) pair and probe, from the lab's calibration file.

Format (schema 1), written by `fpmon lab` (docs/lab/calibration.json):
    {"schema": 1,
     "pairs": {"<gpuA>|<gpuB>": {"layers": {"keys.L3": {"max_rel": 1e-3}, ...},
                                 "default": {"max_rel": 1e-3},          # optional
                                 "timing": {"jitter_rel": 0.1}}}}       # optional
Without a file, or without a pair, the daemon demands bit-exactness and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError

SCHEMA = 1


@dataclass(frozen=True)
class Band:
    pair: str
    max_rel: dict[str, float]  # probe name -> largest relative distance the pair shows
    default_rel: float | None = None
    jitter_rel: float | None = None

    def limit(self, probe: str) -> float | None:
        if probe in self.max_rel:
            return self.max_rel[probe]
        if self.default_rel is not None:
            return self.default_rel
        return max(self.max_rel.values()) if self.max_rel else None


@dataclass(frozen=True)
class Calibration:
    pairs: dict[str, Band] = field(default_factory=dict)
    source: str = ""

    def band(self, prover: str, reference: str) -> Band | None:
        """The band for this pair in either order (noise between two GPUs is symmetric)."""
        return self.pairs.get(f"{prover}|{reference}") or self.pairs.get(f"{reference}|{prover}")


def _band(path: Path, name: str, m: Any) -> Band:
    if not isinstance(m, dict) or not isinstance(m.get("layers", {}), dict):
        raise FpmonError(f"{path}: pair {name!r} must be a map with a 'layers' map")
    rel = {}
    for probe, v in m.get("layers", {}).items():
        if not isinstance(v, dict) or not isinstance(v.get("max_rel"), int | float):
            raise FpmonError(f"{path}: {name} {probe}: expected {{'max_rel': number}}")
        rel[str(probe)] = float(v["max_rel"])
    default = m.get("default", {}).get("max_rel")
    jitter = m.get("timing", {}).get("jitter_rel")
    return Band(
        name,
        rel,
        None if default is None else float(default),
        None if jitter is None else float(jitter),
    )


def load(path: Path | None) -> Calibration:
    if path is None:
        return Calibration()
    if not path.exists():
        raise FpmonError(
            f"{path}: no calibration file; run `fpmon lab` on the GPUs or drop "
            "the calibration setting (the daemon then demands bit-exactness)"
        )
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FpmonError(f"{path}: not JSON ({e}); regenerate it with `fpmon lab`") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        got = doc.get("schema") if isinstance(doc, dict) else None
        raise FpmonError(
            f"{path}: calibration schema {got!r} is not supported (this fpmon reads {SCHEMA})"
        )
    pairs = doc.get("pairs", {})
    if not isinstance(pairs, dict):
        raise FpmonError(f"{path}: 'pairs' must be a map of '<gpuA>|<gpuB>' -> bands")
    return Calibration({str(k): _band(path, str(k), v) for k, v in pairs.items()}, str(path))
