"""Regional compilation: each decoder layer runs one compiled graph shared by all layers.

Why not `torch.compile` of the whole decoder stack (what `compiled = true` meant before): on an
H200 each graph of the 28-layer stack took ~75 s to build, and the stack needed three graphs per
shape class (prefill on an empty cache, the first decode step on the prefill's strided keys,
later decode steps), with batch 1, batch > 1 and padded batches each their own class: a replay
daemon meeting mixed records spent many minutes compiling (docs/lab/RESULTS.md, issue 14).

Here one function, `_layer_forward`, is compiled; each layer's forward routes to it while a
compiled engine runs. Dynamo would specialise a compiled layer on its `layer_idx` (the KV-cache
index) and recompile per layer, so the layer is handed only its own cache slot (`LayerSlot`),
never the index: one graph per shape class serves every layer. The routing is scoped by a
context variable, not a patch of the model, because one loaded model can serve an eager and a
compiled engine side by side (the lab's compile experiment does).

A compiled graph that dynamo gives up on (its recompile limit) would silently run eagerly,
changing the numerics of an honest node's records: `fail_on_recompile_limit_hit` turns that into
an error instead, and the limit is raised to cover the real shape classes of several setups.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import torch

# Shape classes per setup: batch 1 or more x padded or not x prefill or decode (6), times the
# setups one replay process holds (dtype x attention x sdpa backend); a margin above.
RECOMPILE_LIMIT = 64

_active: ContextVar[bool] = ContextVar("fpmon_regional_compile", default=False)
_compiled: Any = None


class LayerSlot:
    """One decoder layer's KV-cache slot, answering the cache's `update` without the index."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *rest: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.layer.update(key_states, value_states, *rest)  # cache_kwargs, if any


def _layer_forward(layer: Any, hidden_states: torch.Tensor, slot: LayerSlot, **kw: Any) -> Any:
    # The class's forward, not the instance's router: no recursion, and the same code object
    # for every layer.
    return type(layer).forward(layer, hidden_states, past_key_values=slot, **kw)


def _compiled_layer_forward() -> Any:
    global _compiled
    if _compiled is None:
        import torch._dynamo
        import torch.fx.experimental._config as fx_config

        # Without duck sizing, dims that happen to be equal when a graph is compiled (a batch of
        # 2 beside a 2-token prompt) get their own symbols instead of a guard that they stay
        # equal: a graph then fits every later shape of its class, and `HFEngine.warm_up` can
        # compile each class once from small shapes.
        fx_config.use_duck_shape = False
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        torch._dynamo.config.recompile_limit = max(
            RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit
        )
        _compiled = torch.compile(_layer_forward, dynamic=True)
    return _compiled


def install(base_model: Any) -> None:
    """Route each decoder layer of `base_model` through the compiled forward while `active()`.

    Idempotent; outside `active()` every layer runs its own eager forward unchanged."""
    compiled = _compiled_layer_forward()
    for idx, layer in enumerate(base_model.layers):
        if getattr(layer, "_fpmon_regional", False):
            continue

        def forward(
            hidden_states: torch.Tensor,
            *args: Any,
            _layer: Any = layer,
            _idx: int = idx,
            _eager: Any = layer.forward,
            **kw: Any,
        ) -> Any:
            cache = kw.get("past_key_values")
            if not _active.get() or args or cache is None:
                return _eager(hidden_states, *args, **kw)
            kw.pop("past_key_values")
            return compiled(_layer, hidden_states, LayerSlot(cache.layers[_idx]), **kw)

        layer.forward = forward
        layer._fpmon_regional = True


@contextmanager
def active() -> Iterator[None]:
    """Compiled layers for the forward passes inside this block (this thread/context only)."""
    token = _active.set(True)
    try:
        yield
    finally:
        _active.reset(token)


def settle(cache: Any) -> None:
    """Make the KV cache contiguous after prefill.

    The prefill leaves each layer's keys as a transposed view of the projection; the first
    decode step would then compile a graph for those strides and the second another for the
    contiguous concatenation. A copy (same values) leaves one decode graph."""
    for layer in cache.layers:
        if getattr(layer, "keys", None) is not None and layer.keys.numel():
            layer.keys = layer.keys.contiguous()
            layer.values = layer.values.contiguous()
