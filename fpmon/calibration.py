"""The calibration file the replay daemon loads: noise bands per GPU pair and probe, timing.

Schema 1:
    {"schema": 1, "model": str, "weights_digest": str,
     "pairs": {"<prover gpu>|<reference gpu>": {
         "bit_exact": bool,                       # honest replays were bit-identical
         "layers": {"keys.L7": {"max_rel": x, "whole_max_rel": y, "p99_rel": z,
                                "per_position_max_rel": [...]}, ...},
         "default": {"max_rel": x},               # the widest probe band of the pair
         "detector": {...}, "detection": {...},   # how well the bands separate cheats
         "timing": {"jitter_rel": j}}},
     "timing": {"<gpu>": {...per-token times, busy fraction, hidden-work slowdowns...}}}
`max_rel` bounds the per-position relative distance (so it also bounds a whole-probe one).
Both orders of a GPU pair are written.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError

SCHEMA = 1


def pair_key(prover: str, reference: str) -> str:
    return f"{prover}|{reference}"


def validate(doc: Any, where: str) -> dict[str, Any]:
    if not isinstance(doc, dict):
        raise FpmonError(f"{where}: a calibration file is a JSON object")
    schema = doc.get("schema")
    if schema != SCHEMA:
        older = isinstance(schema, int) and schema < SCHEMA
        raise FpmonError(
            f"{where}: calibration schema {schema!r} is "
            f"{'older than' if older else 'not'} the one this fpmon reads ({SCHEMA}): "
            "regenerate it with `fpmon lab compare`"
        )
    for k in ("model", "weights_digest", "pairs"):
        if k not in doc:
            raise FpmonError(f"{where}: calibration has no {k!r}: regenerate it")
    if not isinstance(doc["pairs"], dict):
        raise FpmonError(f"{where}: 'pairs' must map '<gpuA>|<gpuB>' to bands")
    for name, pair in doc["pairs"].items():
        if "|" not in name or not isinstance(pair, dict):
            raise FpmonError(f"{where}: pair {name!r} must be '<gpuA>|<gpuB>' -> a map")
        for probe, band in pair.get("layers", {}).items():
            if not isinstance(band, dict) or not isinstance(band.get("max_rel"), int | float):
                raise FpmonError(f"{where}: {name} {probe}: needs a numeric 'max_rel'")
    return doc


def load_calibration(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise FpmonError(f"{path}: no such calibration file; make one with `fpmon lab compare`")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FpmonError(
            f"{path}: not JSON ({e}); regenerate it with `fpmon lab compare`"
        ) from None
    return validate(doc, str(path))


def write_calibration(path: Path, doc: dict[str, Any], force: bool) -> None:
    validate(doc, str(path))
    if path.exists() and not force:
        raise FpmonError(f"{path} exists: pass --force to overwrite it, or choose another --out")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.replace(path)
