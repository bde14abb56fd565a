"""The models and engines a battery needs, all derived from one seeded float32 load.

bfloat16 and float16 copies are cast from the same float32 weights (as `load_model` would),
so every variant carries the declared weights digest; the int8 variant rounds each linear
layer's weights to a per-output-channel int8 grid and back (what a weight-only int8 kernel
computes, without an extra package), while claiming the same digest: it is a cheat.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from fpmon.engines.hf import HFEngine
from fpmon.models import LoadedModel, check_device, load_model
from fpmon.progress import Progress

INT8_LABEL = "int8-weight-sim"


def quantize_int8_weights_(model: torch.nn.Module) -> int:
    """Round every nn.Linear weight (not embeddings / tied head) to symmetric per-row int8."""
    n = 0
    with torch.no_grad():
        for name, mod in model.named_modules():
            if isinstance(mod, torch.nn.Linear) and not name.endswith("lm_head"):
                w = mod.weight
                scale = w.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
                w.copy_(torch.clamp(torch.round(w / scale), -127, 127) * scale)
                n += 1
    return n


class Engines:
    """Lazily built engines by key: bf16, fp16, int8w, compiled (bf16 under torch.compile)."""

    def __init__(self, spec: str, device: str, progress: Progress | None = None) -> None:
        check_device(device)  # before the (slow) seeded load
        self.device = device
        self.f32 = load_model(spec, "float32", "sdpa", "cpu", progress)
        self.weights_digest = self.f32.weights_digest
        self.model_name = self.f32.name
        self._engines: dict[str, HFEngine] = {}
        self._loaded: dict[str, LoadedModel] = {}

    def _derive(self, dtype: torch.dtype, int8: bool = False) -> LoadedModel:
        model = copy.deepcopy(self.f32.model)
        if int8:
            quantize_int8_weights_(model)
        model.to(dtype=dtype, device=self.device).eval()
        f = self.f32
        return LoadedModel(f.name, model, f.tokenizer, f.weights_digest, f.folder)

    def loaded(self, key: str) -> LoadedModel:
        if key not in self._loaded:
            if key == "fp16":
                self._loaded[key] = self._derive(torch.float16)
            elif key == "int8w":
                self._loaded[key] = self._derive(torch.bfloat16, int8=True)
            else:
                self._loaded[key] = self._derive(torch.bfloat16)
        return self._loaded[key]

    def get(self, key: str) -> HFEngine:
        if key not in self._engines:
            if key == "compiled":
                eng = HFEngine(self.loaded("bf16"), device=self.device, compiled=True)
            elif key in ("bf16", "fp16", "int8w"):
                eng = HFEngine(self.loaded(key), device=self.device)
                if key == "int8w":
                    eng.setup = eng.setup.replace(quantization=INT8_LABEL)
            else:
                raise ValueError(f"unknown engine key {key!r}")
            self._engines[key] = eng
        return self._engines[key]


@contextmanager
def attention(engine: HFEngine, attn_impl: str, sdpa_backend: str) -> Iterator[HFEngine]:
    """Run `engine` with another attention implementation / sdpa backend, then restore."""
    model: Any = engine.loaded.model
    old_impl = model.config._attn_implementation
    old_backend, old_setup = engine.sdpa_backend, engine.setup
    if attn_impl != old_impl:
        model.set_attn_implementation(attn_impl)
    engine.sdpa_backend = sdpa_backend
    engine.setup = engine.setup.replace(attn_impl=attn_impl, sdpa_backend=sdpa_backend)
    try:
        yield engine
    finally:
        if attn_impl != old_impl:
            model.set_attn_implementation(old_impl)
        engine.sdpa_backend, engine.setup = old_backend, old_setup
