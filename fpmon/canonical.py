"""Canonical msgpack: one byte string per value, so digests agree on every machine.

Map keys are sorted, floats are always float64, bytes stay bytes. Tensors travel as exact
bytes (see `tensors.Blob`), never as floats rounded through text.
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgpack

DIGEST_NAME = "sha256"


def _canon(obj: Any) -> Any:
    if isinstance(obj, dict):
        for k in obj:
            if not isinstance(k, str):
                raise TypeError(f"canonical maps need string keys, got {type(k).__name__}")
        return {k: _canon(obj[k]) for k in sorted(obj)}
    if isinstance(obj, list | tuple):
        return [_canon(x) for x in obj]
    if isinstance(obj, bool | int | float | str | bytes) or obj is None:
        return obj
    raise TypeError(f"cannot encode {type(obj).__name__} canonically")


def pack(obj: Any) -> bytes:
    return msgpack.packb(_canon(obj), use_bin_type=True, use_single_float=False)


def digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()
