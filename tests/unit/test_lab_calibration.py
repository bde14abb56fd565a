"""Calibration file: schema check with clear errors, no silent overwrite."""

from __future__ import annotations

import json

import pytest

from fpmon.calibration import load_calibration, write_calibration
from fpmon.errors import FpmonError


def doc(schema: int = 1) -> dict:
    return {
        "schema": schema,
        "model": "tiny",
        "weights_digest": "ab",
        "pairs": {"H100|H200": {"layers": {"keys.L3": {"max_rel": 0.01}}}},
        "timing": {},
    }


def test_write_then_load(tmp_path):
    p = tmp_path / "cal.json"
    write_calibration(p, doc(), force=False)
    assert load_calibration(p)["pairs"]["H100|H200"]["layers"]["keys.L3"]["max_rel"] == 0.01
    with pytest.raises(FpmonError, match="--force"):
        write_calibration(p, doc(), force=False)
    write_calibration(p, doc(), force=True)


def test_older_schema_is_a_clear_error(tmp_path):
    p = tmp_path / "old.json"
    p.write_text(json.dumps(doc(schema=0)))
    with pytest.raises(FpmonError, match="older than the one this fpmon reads"):
        load_calibration(p)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.pop("weights_digest"), "weights_digest"),
        (lambda d: d["pairs"].update({"nobar": {}}), "<gpuA>|<gpuB>"),
        (lambda d: d["pairs"]["H100|H200"]["layers"]["keys.L3"].pop("max_rel"), "max_rel"),
    ],
)
def test_malformed(tmp_path, mutate, message):
    d = doc()
    mutate(d)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(d))
    with pytest.raises(FpmonError, match=message):
        load_calibration(p)


def test_not_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text("{")
    with pytest.raises(FpmonError, match="not JSON"):
        load_calibration(p)
