"""Noise bands per (prover GPU, reference GPU) pair and probe, from the lab's calibration file.

Format (schema 1), written by `fpmon lab compare` (docs/lab/calibration.json; the lab's
`fpmon/calibration.py` owns and validates it); the parts the daemon reads:
    {"schema": 1, "model": "...", "weights_digest": "...",
     "pairs": {"<gpuA>|<gpuB>": {"layers": {"keys.L3": {"max_rel": 1e-3}, ...},
                                 "default": {"max_rel": 1e-3},          # optional
                                 "timing": {"jitter_rel": 0.1}}}}       # optional
Without a file, or without a pair, the daemon demands bit-exactness and says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpmon.calibration import load_calibration
from fpmon.errors import FpmonError


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
    model: str = ""
    weights_digest: str = ""  # bands are measured on one model: other weights get none

    def band(self, prover: str, reference: str, weights_digest: str = "") -> Band | None:
        """The band for this pair in either order (noise between two GPUs is symmetric)."""
        if weights_digest and self.weights_digest and weights_digest != self.weights_digest:
            return None
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
    """The lab's calibration (validated by `fpmon.calibration`, the format's owner)."""
    if path is None:
        return Calibration()
    doc = load_calibration(path)
    pairs = {str(k): _band(path, str(k), v) for k, v in doc["pairs"].items()}
    return Calibration(
        pairs, str(path), str(doc.get("model", "")), str(doc.get("weights_digest", ""))
    )
