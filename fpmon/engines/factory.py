"""The one place an engine is built from a declared setup: the agent serving, `fpmon capture`,
and the verifier replaying all call `build`, so what a node runs and what its verifier
reproduces come from the same code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fpmon.engines.base import Engine


@dataclass(frozen=True)
class EngineSpec:
    model: str  # `tiny`, a `random:` preset or a local Hugging Face folder
    kind: str = "hf"  # "hf" or "vllm"
    dtype: str = "bfloat16"
    attn: str = "sdpa"
    device: str = "cpu"
    compiled: bool = False
    sdpa_backend: str = "default"  # HF only
    # vLLM only: scheduler and KV cache sizes (None: vLLM's defaults)
    max_num_batched_tokens: int | None = None
    max_num_seqs: int | None = None
    kv_cache_bytes: int | None = None


def build(spec: EngineSpec, progress: Any = None) -> Engine:
    if spec.kind == "vllm":
        from fpmon.engines.vllm import VLLMEngine

        vllm_sizes = {
            k: v
            for k in ("max_num_batched_tokens", "max_num_seqs", "kv_cache_bytes")
            if (v := getattr(spec, k)) is not None
        }
        return VLLMEngine(
            spec.model,
            dtype=spec.dtype,
            attn_impl=spec.attn,
            device=spec.device,
            compiled=spec.compiled,
            progress=progress,
            **vllm_sizes,
        )
    from fpmon.engines.hf import HFEngine

    return HFEngine(
        spec.model,
        dtype=spec.dtype,
        attn_impl=spec.attn,
        device=spec.device,
        compiled=spec.compiled,
        sdpa_backend=spec.sdpa_backend,
        progress=progress,
    )
