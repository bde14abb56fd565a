"""Shared fixtures. Engines are session-scoped: loading the tiny model costs ~1 s each."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_ENGINES: dict[tuple[str, str], object] = {}


def tiny_engine(dtype: str = "bfloat16", attn: str = "sdpa") -> object:
    """A cached HF engine on the tiny model (safe to share: run_batch keeps no state)."""
    from fpmon.engines.hf import HFEngine

    key = (dtype, attn)
    if key not in _ENGINES:
        _ENGINES[key] = HFEngine("tiny", dtype=dtype, attn_impl=attn, device="cpu")
    return _ENGINES[key]


@pytest.fixture
def engine_factory():
    return tiny_engine
