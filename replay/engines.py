"""Reference engines, loaded once per (model, dtype, attention, compiled, sdpa backend).

Only models listed in the config are loaded (name as records declare it -> spec or folder):
a record naming any other model, or other weights, is unverifiable, never guessed at.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from fpmon.engines.factory import EngineSpec, build
from fpmon.errors import FpmonError
from fpmon.setups import REGIONAL_COMPILE, Setup

EngineKey = tuple[str, str, str, str, bool, str]
REPLAY_ENGINES = ("hf", "vllm")
Factory = Callable[[str, Setup, str], Any]


class Unverifiable(Exception):
    """The verifier cannot replay this record; the message says why.

    `node_fault`: the record declares what this verifier has no reference for (a model, other
    weights, an engine or a setup it cannot replay). An honest operator declares what its
    verifier can check, so the daemon samples such a node at the suspect rate; False when the
    fault is the verifier's own (a listed model that fails to load).
    """

    def __init__(self, message: str, *, node_fault: bool = True) -> None:
        super().__init__(message)
        self.node_fault = node_fault


def _spec(model: str, setup: Setup, device: str, kind: str) -> EngineSpec:
    return EngineSpec(
        model,
        kind=kind,
        dtype=setup.dtype,
        attn=setup.attn_impl,
        device=device,
        compiled=setup.compiled,
        sdpa_backend=setup.sdpa_backend,
    )


def hf_factory(spec: str, setup: Setup, device: str) -> Any:
    return build(_spec(spec, setup, device, "hf"))


def reference_factory(spec: str, setup: Setup, device: str) -> Any:
    """The engine a record declares: HF, or vLLM for records whose schedule vLLM ran.

    vLLM hosts one engine per process (docs/VLLM.md) and changes the host's torch settings: a
    verifier of vLLM nodes runs its own daemon for them, apart from its HF daemon.
    """
    return build(_spec(spec, setup, device, "vllm" if setup.engine == "vllm" else "hf"))


def device_class(setup: Setup) -> str:
    """What a node's setup ran on, in the calibration's terms: the GPU model, or `cpu`."""
    return setup.gpu_name or setup.device


class EngineCache:
    def __init__(
        self,
        models: dict[str, str],
        device: str = "cpu",
        factory: Factory = reference_factory,
        max_engines: int = 8,
    ) -> None:
        self.models = dict(models)
        self.device = device
        self.factory = factory
        self.max_engines = max_engines
        self._engines: OrderedDict[EngineKey, Any] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def reference(self) -> str:
        if self.device.startswith("cuda"):
            import torch

            return torch.cuda.get_device_name(self.device)
        return self.device

    def get(self, model: str, setup: Setup, weights_digest: str = "") -> Any:
        """The engine for this declared setup; `Unverifiable` when the verifier lacks it."""
        spec = self.models.get(model)
        if spec is None:
            raise Unverifiable(
                f"model {model!r} is not among the verifier's models "
                f"({', '.join(sorted(self.models)) or 'none'}); add it to "
                "[models] with a local folder to verify it"
            )
        if setup.engine not in REPLAY_ENGINES:
            raise Unverifiable(
                f"engine {setup.engine!r}: this verifier replays {' and '.join(REPLAY_ENGINES)} "
                "records only"
            )
        if setup.engine == "hf" and setup.compiled and setup.compile_mode != REGIONAL_COMPILE:
            declared = setup.compile_mode
            mode = repr(declared) if declared else "none declared (an older agent)"
            raise Unverifiable(
                f"compiled with compile_mode {mode}; this verifier compiles {REGIONAL_COMPILE!r} "
                "only, and another compile strategy rounds differently by itself"
            )
        if setup.quantization != "none" or setup.tp != 1 or setup.pp != 1:
            raise Unverifiable(
                f"setup {setup.summary()} (quantization/TP/PP) has no reference engine here"
            )
        key = (
            model,
            setup.engine,
            setup.dtype,
            setup.attn_impl,
            setup.compiled,
            setup.sdpa_backend,
        )
        with self._lock:
            engine = self._engines.get(key)
            if engine is None:
                try:
                    engine = self.factory(spec, setup, self.device)
                    # Untimed: a reference time must not carry a compile or the device's
                    # start-up (the timing checks and challenges compare against it).
                    warm_up = getattr(engine, "warm_up", None)
                    if warm_up is not None:
                        warm_up()
                except FpmonError as e:
                    raise Unverifiable(
                        f"cannot load the reference for {model}: {e}", node_fault=False
                    ) from None
                self._engines[key] = engine
                while len(self._engines) > self.max_engines:
                    self._engines.popitem(last=False)
            self._engines.move_to_end(key)
        if weights_digest and engine.weights_digest != weights_digest:
            raise Unverifiable(
                f"record's weights {weights_digest[:12]}… are not the "
                f"verifier's {model} ({engine.weights_digest[:12]}…): a model "
                "swap or another checkpoint; the verifier cannot replay it"
            )
        return engine
