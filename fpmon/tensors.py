"""Exact tensor bytes: bf16/fp16/fp32 kept bit for bit, with dtype and shape."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

# Storage dtype -> (numpy dtype of the raw words, bytes per element)
_RAW: dict[str, np.dtype[Any]] = {
    "bfloat16": np.dtype("<u2"),
    "float16": np.dtype("<f2"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
}
FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")


@dataclass(frozen=True)
class Blob:
    """A tensor as exact little-endian bytes."""

    dtype: str
    shape: tuple[int, ...]
    data: bytes

    def __post_init__(self) -> None:
        if self.dtype not in _RAW:
            raise ValueError(f"unsupported tensor dtype {self.dtype!r}")
        n = int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1
        if n * _RAW[self.dtype].itemsize != len(self.data):
            raise ValueError(
                f"tensor of shape {self.shape} and dtype {self.dtype} needs "
                f"{n * _RAW[self.dtype].itemsize} bytes, got {len(self.data)}"
            )

    @classmethod
    def from_torch(cls, t: Any) -> Blob:
        import torch

        t = t.detach().to("cpu").contiguous()
        name = str(t.dtype).removeprefix("torch.")
        if name not in _RAW:
            raise ValueError(f"unsupported tensor dtype {name!r}")
        raw = t.view(torch.int16) if name == "bfloat16" else t
        return cls(name, tuple(int(s) for s in t.shape), raw.numpy().tobytes())

    def raw(self) -> np.ndarray:
        """The stored words, reshaped (bf16 as uint16)."""
        return np.frombuffer(self.data, dtype=_RAW[self.dtype]).reshape(self.shape)

    def as_float64(self) -> np.ndarray:
        r = self.raw()
        if self.dtype == "bfloat16":
            return (r.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return r.astype(np.float64)

    def ordered_ints(self) -> np.ndarray:
        """Map floats to integers whose difference counts ULPs (sign-magnitude -> two's order)."""
        if self.dtype not in FLOAT_DTYPES:
            return self.raw().astype(np.int64)
        bits = {"bfloat16": 16, "float16": 16, "float32": 32, "float64": 64}[self.dtype]
        word = {16: np.uint16, 32: np.uint32, 64: np.uint64}[bits]
        u = self.raw().view(word).astype(np.uint64).astype(object if bits == 64 else np.int64)
        sign = np.int64(1) << (bits - 1) if bits < 64 else 1 << 63
        u = np.asarray(u)
        neg = (u & sign) != 0
        mag = u & (sign - 1)
        return np.where(neg, -mag, mag).astype(np.int64)

    def to_map(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "shape": list(self.shape), "data": self.data}

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Blob:
        try:
            return cls(str(m["dtype"]), tuple(int(s) for s in m["shape"]), bytes(m["data"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"malformed tensor: {e}") from e
