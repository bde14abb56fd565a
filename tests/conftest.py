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


def curve_cert(folder, name: str) -> tuple[str, str]:
    """A zmq.auth certificate pair `name.key` / `name.key_secret` in `folder`, the secret
    private (0600) as `fpmon keygen` writes it: fpmon refuses a world-readable secret."""
    import zmq.auth

    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    return public, secret
