"""Shared fixtures, for unit and functional tests alike. Test modules take their helpers from
fixtures (here, tests/unit/conftest.py, tests/functional/conftest.py) or from fpmon.testing,
never from each other (tests/unit/test_test_layout.py checks it).

Engines are session-scoped: loading the tiny model costs ~1 s each."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_ENGINES: dict[tuple[str, str], Any] = {}


def _tiny_engine(dtype: str = "bfloat16", attn: str = "sdpa") -> Any:
    """A cached HF engine on the tiny model (safe to share: run_batch keeps no state)."""
    from fpmon.engines.hf import HFEngine

    key = (dtype, attn)
    if key not in _ENGINES:
        _ENGINES[key] = HFEngine("tiny", dtype=dtype, attn_impl=attn, device="cpu")
    return _ENGINES[key]


def _shared_engines(spec: Any, setup: Any, device: str) -> Any:
    # The daemon's and the judge's `engine_factory`: the same cached engines as the provers'
    # (they are done before anything replays).
    return _tiny_engine(setup.dtype, setup.attn_impl)


@pytest.fixture(scope="session")
def tiny_engine() -> Callable[..., Any]:
    """`tiny_engine(dtype="bfloat16", attn="sdpa")`: a cached HF engine on the tiny model."""
    return _tiny_engine


@pytest.fixture(scope="session")
def shared_engines() -> Callable[[Any, Any, str], Any]:
    """An `engine_factory(spec, setup, device)` for ReplayDaemon and EngineCache that hands out
    the cached tiny engines of `tiny_engine`."""
    return _shared_engines


def _curve_cert(folder: str | Path, name: str) -> tuple[str, str]:
    """A zmq.auth certificate pair `name.key` / `name.key_secret` in `folder`, the secret
    private (0600) as `fpmon keygen` writes it: fpmon refuses a world-readable secret."""
    import zmq.auth

    public, secret = zmq.auth.create_certificates(str(folder), name)
    os.chmod(secret, 0o600)
    return public, secret


@pytest.fixture(scope="session")
def curve_cert() -> Callable[[str | Path, str], tuple[str, str]]:
    """`curve_cert(folder, name)`: a CurveZMQ certificate pair, the secret 0600."""
    return _curve_cert


def _flip_at_rest(path: Path, needle: bytes) -> None:
    """Flip one byte of `needle` where it sits in the closed database file (a bad sector)."""
    raw = path.read_bytes()
    at = raw.index(needle) + len(needle) // 2
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(bytes([raw[at] ^ 0x20]))


def _smash_middle_page(path: Path) -> None:
    """Overwrite one whole B-tree page in the middle of the closed file with garbage."""
    page = 4096
    pages = path.stat().st_size // page
    with open(path, "r+b") as f:
        f.seek((pages // 2) * page)
        f.write(b"\xa5" * page)


@pytest.fixture(scope="session")
def flip_at_rest() -> Callable[[Path, bytes], None]:
    """`flip_at_rest(path, needle)`: one flipped byte inside `needle` in a closed SQLite file."""
    return _flip_at_rest


@pytest.fixture(scope="session")
def smash_middle_page() -> Callable[[Path], None]:
    """`smash_middle_page(path)`: one garbage page in the middle of a closed SQLite file."""
    return _smash_middle_page
