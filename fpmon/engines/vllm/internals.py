"""Everything that touches vLLM, in one module, checked against the tested version range.

Supported extension points carry most of the work:
- `worker_extension_cls` + `collective_rpc`: our methods run inside the worker that owns the
  model; they register forward hooks on vLLM's own modules (no patching).
- `logits_processors`: a per-request processor forces the recorded token (teacher forcing).
- `scheduler_cls`: a subclass of vLLM's scheduler that records every step it schedules and,
  on replay, follows a recorded plan.

What is unavoidably internal (and why it is pinned): the runner's persistent batch
(`input_batch.req_ids`, `num_prompt_tokens`) and `query_start_loc` map the flat token tensor
of a step to requests; the scheduler's `running` list and `max_num_scheduled_tokens` are what
a plan steers; `llm_engine.engine_core.engine_core.scheduler` reaches the in-process scheduler.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch

from fpmon.errors import FpmonError

# The versions these internals were read and tested against. Another version may move them.
TESTED = ((0, 32, 0), (0, 32, 99))
INSTALL_HINT = "pip install 'fpmon[vllm]'"


def _version_tuple(text: str) -> tuple[int, int, int]:
    parts = []
    for piece in text.split("+")[0].split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    while len(parts) < 3:
        parts.append(0)
    return (parts[0], parts[1], parts[2])


def check_version(version: str) -> None:
    low, high = TESTED
    if not low <= _version_tuple(version) <= high:
        raise FpmonError(
            f"vLLM {version} is not supported: fpmon's vLLM engine is tested with "
            f"{'.'.join(map(str, low))} to {'.'.join(map(str, low[:2]))}.x; "
            f"install it with {INSTALL_HINT}"
        )


def import_vllm() -> Any:
    """Import vLLM for in-process use, or say how to install it."""
    # In-process engine core (no spawned engine process, no __main__ guard needed) and the
    # V1 model runner the hooks were written for.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")
    try:
        import vllm
    except ImportError as e:
        raise FpmonError(
            f"the vLLM engine needs vLLM, which is not installed: {INSTALL_HINT}"
        ) from e
    check_version(vllm.__version__)
    return vllm


# --------------------------------------------------------------------------------------------
# Worker side: probes and the layout of every step, read by hooks.


class FpmonWorkerExtension:
    """Mixed into vLLM's worker class; `self` is the worker (it has `model_runner`)."""

    _fpmon: _WorkerState | None  # set by fpmon_install, None after fpmon_uninstall

    def _fpmon_state(self) -> _WorkerState:
        st = self._fpmon
        assert st is not None, "fpmon_install first"  # the engine installs before it runs
        return st

    def fpmon_install(self, layers: list[int], topk: int) -> int:
        runner = self.model_runner  # type: ignore[attr-defined]
        model = runner.get_model()
        st = _WorkerState(runner, list(layers), int(topk))
        old = getattr(self, "_fpmon", None)
        if old is not None:
            old.remove()
        self._fpmon = st
        timed = st.timed
        inner = model.model
        # Hooks on the top-level model: the inner decoder stack is wrapped by vLLM's compile
        # decorator, whose __call__ bypasses nn.Module hooks even in eager mode.
        st.handles.append(model.register_forward_pre_hook(timed(st.on_model_in), with_kwargs=True))
        st.handles.append(model.register_forward_hook(timed(st.on_model_out)))
        for layer in layers:
            attn = inner.layers[layer].self_attn.attn
            hook = timed(st.key_hook(layer))
            st.handles.append(attn.register_forward_pre_hook(hook, with_kwargs=True))
        st.handles.append(model.logits_processor.register_forward_hook(timed(st.on_logits)))
        return len(inner.layers)

    def fpmon_set(self, enabled: bool) -> None:
        self._fpmon_state().enabled = bool(enabled)

    def fpmon_uninstall(self) -> None:
        st = getattr(self, "_fpmon", None)
        if st is not None:
            st.remove()
            self._fpmon = None

    def fpmon_take(self, req_ids: list[str]) -> dict[str, dict[str, Any]]:
        """Probes and step layouts of finished requests; forgets them."""
        st = self._fpmon_state()
        return {rid: st.take(rid) for rid in req_ids}

    def fpmon_spent(self) -> float:
        """Seconds spent inside fpmon's hooks since the last call (capture cost, attributed)."""
        st = self._fpmon_state()
        got, st.spent_s = st.spent_s, 0.0
        return got

    def fpmon_layouts(self) -> list[list[tuple[str, int, int]]]:
        st = self._fpmon_state()
        got, st.layouts = st.layouts, []
        return got


class _StepCapture:
    """What one forward pass probed: rows of tensors, one row per probed request."""

    __slots__ = ("tensors",)

    def __init__(self) -> None:
        self.tensors: dict[str, torch.Tensor] = {}


class _WorkerState:
    """Hooks do one indexed copy per probe per step; rows are split per request only when
    a request's probes are taken (keeps the per-step Python work small)."""

    def __init__(self, runner: Any, layers: list[int], topk: int) -> None:
        self.runner = runner
        self.layers = layers
        self.topk = topk
        self.enabled = True
        self.spent_s = 0.0
        self.handles: list[Any] = []
        # Per request: [(position, step capture, row)] for each probed position.
        self.probes: dict[str, list[tuple[int, _StepCapture, int]]] = {}
        # Per forward pass: [(req_id, tokens, first position)] in the runner's row order.
        self.layouts: list[list[tuple[str, int, int]]] = []
        # Served mode (serve.py): per request its first step and (prompt length, prompt ids,
        # the runner's live output list), noted while the runner still holds the request.
        self.meta: dict[str, tuple[int, list[int], list[int]]] | None = None
        self.first_step: dict[str, int] = {}
        self.base = 0
        self._cap: _StepCapture | None = None
        self._sel: torch.Tensor | None = None  # token indices probed (None: all of them)
        self._logit_rows: torch.Tensor | None = None

    def timed(self, fn: Any) -> Any:
        """Wrap a hook so the time spent in it is counted (two clock reads a call)."""

        def run(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent_s += time.perf_counter() - t0

        return run

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles.clear()

    def take(self, rid: str) -> dict[str, Any]:
        rows = self.probes.pop(rid, [])
        if not rows:
            return {}
        out: dict[str, Any] = {"pos": [p for p, _c, _j in rows]}
        for name in rows[0][1].tensors:
            out[name] = torch.stack([c.tensors[name][j] for _p, c, j in rows])
        return out

    def on_model_in(self, _mod: Any, args: tuple, kwargs: dict) -> None:
        self._cap = None
        if not self.enabled:
            return
        positions = kwargs.get("positions", args[1] if len(args) > 1 else None)
        assert positions is not None  # vLLM's model forward always gets the positions
        batch = self.runner.input_batch
        n = batch.num_reqs
        starts = self.runner.query_start_loc.np[: n + 1].tolist()
        pos = positions.tolist()
        prompt_lens = batch.num_prompt_tokens[:n].tolist()
        cap = _StepCapture()
        sel: list[int] = []
        rows: list[int] = []
        layout = []
        for r in range(n):
            rid = batch.req_ids[r]
            a, b = starts[r], starts[r + 1]
            layout.append((rid, b - a, pos[a]))
            if self.meta is not None and rid not in self.first_step:
                self.first_step[rid] = self.base + len(self.layouts)
                state = self.runner.requests[rid]
                prompt = list(state.prompt_token_ids or [])
                self.meta[rid] = (len(prompt), prompt, state.output_token_ids)
            # Probed positions: the last prompt token and every decode token. Each is the last
            # token of its request's slice, i.e. the row whose logits vLLM samples from.
            if b > a and pos[b - 1] >= prompt_lens[r] - 1:
                self.probes.setdefault(rid, []).append((pos[b - 1], cap, len(sel)))
                sel.append(b - 1)
                rows.append(r)
        self.layouts.append(layout)
        if sel:
            self._cap = cap
            # A decode-only step probes every token and every logits row: keep references to
            # the step's own fresh tensors instead of copying (no extra kernel in the step).
            every = len(sel) == len(pos) and len(rows) == n
            self._sel = None if every else torch.tensor(sel, dtype=torch.long)
            self._logit_rows = None if every else torch.tensor(rows, dtype=torch.long)

    def key_hook(self, layer: int) -> Any:
        name = f"keys.L{layer}"

        def hook(_mod: Any, args: tuple, kwargs: dict) -> None:
            if self._cap is None:
                return
            key = args[1] if len(args) > 1 else kwargs["key"]
            flat = key.reshape(key.shape[0], -1)
            self._cap.tensors[name] = flat if self._sel is None else flat[self._sel]

        return hook

    def on_model_out(self, _mod: Any, _args: Any, out: Any) -> None:
        if self._cap is None:
            return
        hidden = out[0] if isinstance(out, tuple) else out
        self._cap.tensors["hidden"] = hidden if self._sel is None else hidden[self._sel]

    def on_logits(self, _mod: Any, _args: Any, logits: torch.Tensor) -> None:
        if self._cap is None:
            return
        rows = logits if self._logit_rows is None else logits[self._logit_rows]
        v, i = torch.topk(rows, self.topk, dim=-1)
        self._cap.tensors["topv"] = v
        self._cap.tensors["topi"] = i
        self._cap = None


# --------------------------------------------------------------------------------------------
# Teacher forcing: a per-request logits processor (vLLM's documented adapter).


def make_forcing_processor() -> type:
    from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

    class ForceRecorded(AdapterLogitsProcessor):
        """Requests carrying `extra_args["fpmon_forced"]` emit exactly those tokens.

        Every other logit becomes -inf, so greedy picks the recorded token. Probes read the
        logits before the sampler, so the recorded top-k stays the model's own.
        """

        def is_argmax_invariant(self) -> bool:
            return False

        def new_req_logits_processor(self, params: Any) -> Any:
            forced = (params.extra_args or {}).get("fpmon_forced")
            if not forced:
                return None
            tokens = [int(t) for t in forced]

            def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
                step = len(output_ids)
                if step >= len(tokens):
                    return logits
                out = torch.full_like(logits, float("-inf"))
                out[tokens[step]] = 0.0
                return out

            return force

    ForceRecorded.__module__ = __name__
    ForceRecorded.__qualname__ = "ForceRecorded"
    return ForceRecorded


# --------------------------------------------------------------------------------------------
# Scheduler: record what ran; on replay, follow a plan.


def make_scheduler_cls() -> type:
    from vllm.v1.core.sched.scheduler import Scheduler

    class FpmonScheduler(Scheduler):
        """vLLM's own scheduler, plus a log of every step and an optional plan to follow.

        A plan step is [(req_id, tokens), ...] in scheduling order. Following it: requests not
        in the step are hidden from this call, the planned ones run in planned order, and the
        token budget is the step's total, so vLLM's own policy gives each request its count
        (an honest chunked step caps only the last request). What vLLM then scheduled is
        compared with the plan by the caller.
        """

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.fpmon_log: list[list[tuple[str, int]]] = []
            # Plan steps name requests by index; fpmon_names maps an index to vLLM's id once
            # the request has been added.
            self.fpmon_plan: list[list[tuple[int, int]]] | None = None
            self.fpmon_names: dict[int, str] = {}
            self.fpmon_record = True

        def schedule(self, *args: Any, **kwargs: Any) -> Any:
            plan = self.fpmon_plan
            if plan is None:
                out = super().schedule(*args, **kwargs)
            else:
                out = self._follow(plan[0] if plan else [], args, kwargs)
                if plan:
                    plan.pop(0)
            if self.fpmon_record and out.total_num_scheduled_tokens:
                self.fpmon_log.append(list(out.num_scheduled_tokens.items()))
            return out

        def _follow(self, step: list[tuple[int, int]], args: Any, kwargs: Any) -> Any:
            wanted = [self.fpmon_names.get(i, "") for i, _ in step]
            by_id = {r.request_id: r for r in self.running}
            keep = set(wanted)
            hidden = [r for r in self.running if r.request_id not in keep]
            self.running = [by_id[rid] for rid in wanted if rid in by_id]
            budget = self.max_num_scheduled_tokens
            self.max_num_scheduled_tokens = sum(n for _, n in step)
            try:
                return super().schedule(*args, **kwargs)
            finally:
                self.max_num_scheduled_tokens = budget
                self.running = self.running + hidden

    FpmonScheduler.__module__ = __name__
    FpmonScheduler.__qualname__ = "FpmonScheduler"
    return FpmonScheduler


def scheduler_of(llm: Any) -> Any:
    """The in-process scheduler instance (needs VLLM_ENABLE_V1_MULTIPROCESSING=0)."""
    try:
        return llm.llm_engine.engine_core.engine_core.scheduler
    except AttributeError as e:
        raise FpmonError(
            "cannot reach vLLM's scheduler: fpmon runs vLLM in-process "
            "(VLLM_ENABLE_V1_MULTIPROCESSING=0 must be set before vLLM is imported)"
        ) from e


def attention_backend(llm: Any) -> str:
    try:
        runner = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker
        groups = runner.model_runner.attn_groups
        return str(groups[0][0].backend.get_name())
    except Exception:  # backend naming moves between releases; it is informative only
        return "unknown"
