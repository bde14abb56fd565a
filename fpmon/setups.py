"""The declared setup: every dimension that leaves its own rounding pattern in activations."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

Dtype = Literal["bfloat16", "float16", "float32"]
AttnImpl = Literal["eager", "sdpa"]
EngineKind = Literal["hf", "vllm"]
DTYPES: tuple[str, ...] = get_args(Dtype)
ATTN_IMPLS: tuple[str, ...] = get_args(AttnImpl)
ENGINES: tuple[str, ...] = get_args(EngineKind)
# What `compiled = true` compiles in this build (fpmon/engines/regional.py: one compiled graph
# per decoder layer). Declared with every compiled record: compile strategies round apart, so a
# verifier replays only the one it runs, and an older agent's whole-stack compile (no mode
# declared) is unverifiable rather than a mismatch that only the compiler caused.
REGIONAL_COMPILE = "regional-layer-v1"

# Fields that say *what computation ran*. Changing any of them may change the numerics, so a
# replay must reproduce them; attribution names a mismatch by one of these.
NUMERIC_FIELDS = (
    "engine",
    "engine_version",
    "torch_version",
    "cuda_version",
    "gpu_name",
    "dtype",
    "attn_impl",
    "sdpa_backend",
    "compiled",
    "compile_mode",
    "batch_size",
    "tp",
    "pp",
    "quantization",
    "cpu_threads",
)


@dataclass(frozen=True)
class Setup:
    """What a node declares it ran for one request (and what a replay reproduces)."""

    engine: str = "hf"
    engine_version: str = ""
    torch_version: str = ""
    cuda_version: str = ""
    device: str = "cpu"
    gpu_name: str = ""
    dtype: str = "bfloat16"
    attn_impl: str = "sdpa"
    sdpa_backend: str = "default"
    compiled: bool = False
    compile_mode: str = ""  # how it was compiled (REGIONAL_COMPILE); "" for eager
    batch_size: int = 1
    slot: int = 0
    tp: int = 1
    pp: int = 1
    quantization: str = "none"
    # torch's intra-op threads, on the CPU only (0 elsewhere): float32 reductions split by
    # thread count, so an honest CPU node and its verifier must agree on it (measured here).
    cpu_threads: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.attn_impl not in ATTN_IMPLS:
            raise ValueError(
                f"attention implementation must be one of {', '.join(ATTN_IMPLS)}, "
                f"got {self.attn_impl!r}"
            )
        if self.compile_mode and not self.compiled:
            raise ValueError(f"compile_mode {self.compile_mode!r} on a setup that is not compiled")
        if self.batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {self.batch_size}")
        if not 0 <= self.slot < self.batch_size:
            raise ValueError(
                f"slot {self.slot} is outside a batch of {self.batch_size}: "
                f"use a slot from 0 to {self.batch_size - 1}"
            )

    def to_map(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Setup:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(m) - names
        if unknown:
            raise ValueError(f"unknown setup fields: {', '.join(sorted(unknown))}")
        return cls(**m)

    def replace(self, **changes: Any) -> Setup:
        return dataclasses.replace(self, **changes)

    def with_compiled(self, compiled: bool) -> Setup:
        """This setup compiled the way this build compiles (or eager): the two fields agree."""
        return self.replace(compiled=compiled, compile_mode=REGIONAL_COMPILE if compiled else "")

    def numeric_diff(self, other: Setup) -> list[str]:
        """Names of numerics-relevant fields that differ (the vocabulary of attribution)."""
        return [f for f in NUMERIC_FIELDS if getattr(self, f) != getattr(other, f)]

    def summary(self) -> str:
        parts = [
            self.engine,
            self.dtype,
            self.attn_impl,
            f"bs{self.batch_size}@{self.slot}",
            "compiled" if self.compiled else "eager-mode",
        ]
        if self.quantization != "none":
            parts.append(self.quantization)
        if self.gpu_name:
            parts.append(self.gpu_name)
        return " ".join(parts)
