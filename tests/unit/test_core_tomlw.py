"""The TOML writer behind generated configs: what it writes, tomllib reads back unchanged."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fpmon import tomlw


def test_round_trip_through_tomllib() -> None:
    doc = {
        "node": 'n1 "quoted" \\ path',
        "flag": True,
        "rate": 0.25,
        "layers": [0, 7, 14],
        "endpoints": {"intake": "tcp://127.0.0.1:*", "state_dir": Path("/tmp/x")},
        "nodes": [{"name": "a", "port": 1}, {"name": "b", "port": 2}],
    }
    back = tomllib.loads(tomlw.dumps(doc))
    assert back == {**doc, "endpoints": {"intake": "tcp://127.0.0.1:*", "state_dir": "/tmp/x"}}


def test_keys_that_need_quotes_read_back() -> None:
    """A `[models]` table keyed by preset names: a bare `random:qwen2.5-1.5b` is not TOML."""
    doc = {"models": {"random:qwen2.5-1.5b": "random:qwen2.5-1.5b", "a b": "x"}}
    assert tomllib.loads(tomlw.dumps(doc)) == doc


def test_unwritable_value_is_refused() -> None:
    with pytest.raises(TypeError, match="NoneType"):
        tomlw.dumps({"x": None})
