"""Plugin side of attaching fpmon to an operator's own `vllm serve` (loaded BY vLLM).

The operator keeps their OpenAI-compatible server and adds flags (docs/VLLM.md):

    VLLM_SERVER_DEV_MODE=1 VLLM_USE_V2_MODEL_RUNNER=0 vllm serve MODEL --host 127.0.0.1 \\
        --enforce-eager --no-enable-prefix-caching --no-async-scheduling \\
        --worker-extension-cls fpmon.engines.vllm.serve.FpmonServerWorker \\
        --scheduler-cls fpmon.engines.vllm.serve.FpmonServerScheduler

The scheduler subclass logs every step's schedule; the worker extension's hooks log each
step's row layout and every request's probes. Both live in vLLM's engine-core process (with one
GPU / TP=1 the worker runs there), so they share this module's state. The fpmon agent runs
beside the server as a sidecar (`fpmon.engines.vllm.attach.ServerTap`) and talks to the
extension through vLLM's own `/collective_rpc` route: `fpmon_attach` once, then `fpmon_drain`
to collect finished requests as record material (prompt, output, probes, window schedule).
Arguments and results are JSON (the route's contract).
"""

from __future__ import annotations

import base64
import json
import os
import threading
from typing import Any

from vllm.v1.core.sched.scheduler import Scheduler

from fpmon.engines.vllm import internals
from fpmon.engines.vllm import schedule as vsched
from fpmon.engines.vllm.attach import NOT_ATTACHED

MAX_STEPS = 100_000  # steps kept for windows; older ones (and their requests) are forgotten


class _Shared:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sched: list[list[tuple[str, int]]] = []
        self.finished: list[str] = []


STATE = _Shared()


class FpmonServerScheduler(Scheduler):
    """vLLM's scheduler plus a log of what each step scheduled and which requests finished."""

    def schedule(self, *args: Any, **kwargs: Any) -> Any:
        out = super().schedule(*args, **kwargs)
        with STATE.lock:
            STATE.finished.extend(out.finished_req_ids)
            if out.total_num_scheduled_tokens:
                STATE.sched.append(list(out.num_scheduled_tokens.items()))
        return out


def _blob_b64(t: Any) -> str:
    import msgpack

    from fpmon.tensors import Blob

    return base64.b64encode(msgpack.packb(Blob.from_torch(t.cpu()).to_map())).decode()


class FpmonServerWorker(internals.FpmonWorkerExtension):
    """Worker extension for a served vLLM: the JSON face of the capture hooks."""

    def fpmon_attach(self, arg: str) -> dict[str, Any]:
        from fpmon.engines.vllm.engine import resolve_model

        spec = json.loads(arg or "{}")
        runner = self.model_runner  # type: ignore[attr-defined]
        cfg = runner.vllm_config
        n = int(cfg.model_config.hf_config.num_hidden_layers)
        layers = spec.get("layers") or list(range(n))
        topk = int(spec.get("topk", 8))
        # Checked before any hook goes in: a failed install would leave some hooks behind.
        bad = [x for x in layers if not 0 <= int(x) < n]
        if bad or topk < 1:
            why = f"layers {bad} are outside 0..{n - 1}" if bad else f"topk {topk} is below 1"
            raise ValueError(f"fpmon_attach: {why}")
        self.fpmon_install(layers, topk)
        st = self._fpmon_state()
        st.meta = {}  # request id -> (prompt length, prompt ids, live output list)
        st.first_step = {}
        st.base = 0  # global index of layouts[0] and STATE.sched[0]
        with STATE.lock:
            STATE.sched.clear()
            STATE.finished.clear()
        name, _folder, digest = resolve_model(cfg.model_config.model)
        import torch
        import vllm

        return {
            "model": name,
            "weights_digest": digest,
            "engine_version": str(vllm.__version__),
            "torch_version": str(torch.__version__),
            "dtype": str(cfg.model_config.dtype).removeprefix("torch."),
            "layers": [int(x) for x in layers],
            "attention_backend": str(runner.attn_groups[0][0].backend.get_name()),
            "omp_threads": int(torch.get_num_threads()),
            "config": self._fpmon_config(),
        }

    def fpmon_status(self, arg: str = "") -> dict[str, Any]:
        """Counters for the sidecar's health view (and for finding a broken attachment)."""
        # Before the first attach the worker has no state at all: that is an answer too.
        st = getattr(self, "_fpmon", None)
        cfg = self.model_runner.vllm_config  # type: ignore[attr-defined]
        with STATE.lock:
            sched_steps, finished = len(STATE.sched), len(STATE.finished)
        return {
            "attached": st is not None and st.meta is not None,
            "num_layers": int(cfg.model_config.hf_config.num_hidden_layers),
            "scheduler_steps": sched_steps,
            "model_steps": len(st.layouts) if st else 0,
            "pending_finished": finished,
            "requests_seen": len(st.first_step) if st else 0,
            "pid": os.getpid(),  # this worker's process: the agent's telemetry counts it as engine
        }

    def fpmon_drain(self, arg: str = "") -> dict[str, Any]:
        """Finished requests since the last drain, as JSON record material."""
        st = getattr(self, "_fpmon", None)
        if st is None or st.meta is None:
            # The sidecar matches this text (attach.NOT_ATTACHED) and attaches again.
            raise RuntimeError(f"{NOT_ATTACHED}: call fpmon_attach (did the server restart?)")
        with STATE.lock:
            done, STATE.finished = STATE.finished, []
            sched = list(STATE.sched)
        out = []
        for rid in done:
            if rid not in st.first_step:
                continue
            out.append(self._fpmon_window(rid, sched))
        self._fpmon_trim()
        return {"records": out}

    # -- internals of the plugin ---------------------------------------------------------------
    def _fpmon_window(self, rid: str, sched: list[list[tuple[str, int]]]) -> dict[str, Any]:
        st = self._fpmon_state()
        layouts = st.layouts
        meta = st.meta
        assert meta is not None  # served mode: fpmon_attach set it
        g0 = st.first_step[rid] - st.base
        g1 = max(i for i in range(g0, len(layouts)) if any(r == rid for r, _n, _p in layouts[i]))
        steps = range(g0, g1 + 1)
        order: list[str] = []
        for i in steps:
            for r, _n, _p in layouts[i]:
                if r not in order:
                    order.append(r)
        order.remove(rid)
        order.insert(0, rid)  # the record's own request is slot 0
        index = {r: k for k, r in enumerate(order)}
        before: dict[str, int] = {}
        end: dict[str, int] = {}
        for i in steps:
            for r, n, p in layouts[i]:
                before.setdefault(r, p)
                end[r] = p + n
        lengths = [meta[r][0] for r in order]
        outs = [max(0, end[r] - meta[r][0] + 1) for r in order]
        schedule = vsched.build(
            lengths,
            outs,
            [[(index[r], n) for r, n in sched[i]] for i in steps],
            [[(index[r], n, p) for r, n, p in layouts[i]] for i in steps],
            outs[0] - 1,
            self._fpmon_config(),
            [before[r] for r in order],
        )
        bucket = st.take(rid)
        _n, prompt, output = meta[rid]
        return {
            "request_id": rid[:-9] if len(rid) > 9 and rid[-9] == "-" else rid,
            "prompt_ids": prompt,
            "output_ids": list(output),
            "positions": bucket.get("pos", []),
            "probes": {k: _blob_b64(v) for k, v in bucket.items() if k != "pos"},
            "schedule": schedule,
        }

    def _fpmon_config(self) -> dict[str, Any]:
        cfg = self.model_runner.vllm_config  # type: ignore[attr-defined]
        return {
            "max_num_batched_tokens": int(cfg.scheduler_config.max_num_batched_tokens),
            "max_num_seqs": int(cfg.scheduler_config.max_num_seqs),
            "chunked_prefill": bool(cfg.scheduler_config.enable_chunked_prefill),
            "prefix_caching": bool(cfg.cache_config.enable_prefix_caching),
            "cuda_graphs": not bool(cfg.model_config.enforce_eager),
        }

    def _fpmon_trim(self) -> None:
        st = self._fpmon_state()
        extra = len(st.layouts) - MAX_STEPS
        if extra > 0:
            del st.layouts[:extra]
            with STATE.lock:
                del STATE.sched[:extra]
            st.base += extra
            live = {r for s in st.layouts for r, _n, _p in s}
            for gone in [r for r in st.first_step if r not in live]:
                st.first_step.pop(gone, None)
                assert st.meta is not None  # first_step is noted only in served mode, with meta
                st.meta.pop(gone, None)
