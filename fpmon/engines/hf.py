"""Hugging Face transformers engine: static batches, prefill then KV-cached decode.

Probes cost almost nothing: post-RoPE keys are read from the KV cache once at the end of the
batch (they are written there anyway), the final hidden state is the base model's output, top-k
comes from logits the model computes anyway. Everything stays on the device until one copy at
the end.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch

from fpmon.engines import regional
from fpmon.engines.base import BatchRequest, BatchResult, ProbeSpec, RowResult, default_layers
from fpmon.errors import FpmonError, OverBudget
from fpmon.models import LoadedModel, load_model
from fpmon.progress import Progress
from fpmon.records import HIDDEN_PROBE, TOPK_IDS, TOPK_VALUES, key_probe
from fpmon.setups import REGIONAL_COMPILE, Setup
from fpmon.tensors import Blob

SDPA_BACKENDS = ("default", "math", "flash", "efficient", "cudnn")

# Step logits kept for the batched top-k before a chunk is reduced (bytes on the device).
_PENDING_LOGITS_BYTES = 256 << 20


def _sdpa_context(backend: str) -> AbstractContextManager[Any]:
    if backend == "default":
        return nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    table = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    return sdpa_kernel([table[backend]])


class HFEngine:
    def __init__(
        self,
        model: str | LoadedModel,
        *,
        dtype: str = "bfloat16",
        attn_impl: str = "sdpa",
        device: str = "cpu",
        compiled: bool = False,
        sdpa_backend: str = "default",
        progress: Progress | None = None,
    ) -> None:
        import transformers

        if sdpa_backend not in SDPA_BACKENDS:
            raise FpmonError(
                f"unknown sdpa backend {sdpa_backend!r}: use {', '.join(SDPA_BACKENDS)}"
            )
        if sdpa_backend != "default" and attn_impl != "sdpa":
            raise FpmonError("an sdpa backend only applies with --attn sdpa")
        self.loaded = (
            model
            if isinstance(model, LoadedModel)
            else load_model(model, dtype, attn_impl, device, progress)
        )
        self.device = torch.device(device)
        self.model_name = self.loaded.name
        self.weights_digest = self.loaded.weights_digest
        self.num_layers = self.loaded.num_layers
        self.max_positions = self.loaded.max_positions
        self.vocab_limit = len(self.loaded.tokenizer)
        tok = self.loaded.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        self.sdpa_backend = sdpa_backend
        gpu = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else ""
        self.setup = Setup(
            engine="hf",
            engine_version=transformers.__version__,
            torch_version=str(torch.__version__),  # TorchVersion is a str subclass
            cuda_version=torch.version.cuda or "",
            device=self.device.type,
            gpu_name=gpu,
            dtype=str(self.loaded.model.dtype).removeprefix("torch."),
            attn_impl=self.loaded.model.config._attn_implementation,
            sdpa_backend=sdpa_backend,
            compiled=compiled,
            compile_mode=REGIONAL_COMPILE if compiled else "",
        )
        # The decoder stack runs as HF's CausalLM forward does (base model, then lm_head on the
        # last position, as `logits_to_keep=1`), called in two parts so the final hidden state
        # is an output rather than a hook: a Python hook inside a compiled region made dynamo
        # recompile at every decode step (measured on the H100, docs/lab/RESULTS.md).
        # `compiled` compiles each decoder layer, one graph shared by all layers
        # (fpmon/engines/regional.py says why not the whole stack).
        self.compiled = compiled
        self._base = self.loaded.model.model
        if compiled:
            regional.install(self._base)
        self._head = self.loaded.model.lm_head

    def warm_up(self) -> float:
        """Run every shape class once, untimed and unrecorded, so that no served or replayed
        batch pays a first-use cost inside its committed or reference time: for a compiled
        engine the compile of each class (batch 1, batch > 1, padded; prefill and decode: 36 s
        for the 1.5B preset on an H200, docs/lab/RESULTS.md), otherwise the device's lazy
        start-up (CUDA context, kernel loads). Returns the seconds it took."""
        t = time.perf_counter()
        a, b = 3 % self.vocab_limit, 4 % self.vocab_limit
        shapes = [[[a, b]], [[a, b], [a, b]], [[a, b], [a]]] if self.compiled else [[[a, b]]]
        spec = ProbeSpec(tuple(default_layers(self.num_layers)))
        for rows in shapes:
            self.run_batch(BatchRequest(rows, 1, list(range(len(rows))), spec))
        return time.perf_counter() - t

    def encode(self, text: str) -> list[int]:
        return [int(x) for x in self.loaded.tokenizer(text)["input_ids"]]

    def decode(self, ids: list[int]) -> str:
        return self.loaded.tokenizer.decode(ids, skip_special_tokens=True)

    def check_request(self, req: BatchRequest) -> None:
        if not req.rows or any(not r for r in req.rows):
            raise FpmonError("empty prompt: give at least one token of text")
        longest = max(len(r) for r in req.rows)
        if longest + req.decode_steps + 1 > self.max_positions:
            raise FpmonError(
                f"prompt of {longest} tokens plus {req.decode_steps} decode steps exceeds the "
                f"model's context of {self.max_positions} positions: shorten the prompt or "
                f"lower --decode-steps"
            )
        if req.probes:
            bad = [x for x in req.probes.layers if not 0 <= x < self.num_layers]
            if bad:
                raise FpmonError(
                    f"layer {bad[0]} is out of range: this model has layers 0 to "
                    f"{self.num_layers - 1}"
                )
        if req.forced is not None:
            if len(req.forced) != len(req.rows):
                raise FpmonError(
                    f"teacher forcing names {len(req.forced)} rows for a batch of {len(req.rows)}"
                )
            short = [
                r
                for r, row in enumerate(req.forced)
                if row is not None and len(row) <= req.decode_steps
            ]
            if short:
                raise FpmonError(
                    f"row {short[0]} is forced with fewer than the {req.decode_steps + 1} tokens "
                    f"that {req.decode_steps} decode steps consume: the record's output is shorter "
                    f"than its declared decode steps"
                )
        for r in req.probe_rows:
            if not 0 <= r < len(req.rows):
                raise FpmonError(f"probe row {r} is outside a batch of {len(req.rows)}")

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.inference_mode()
    def run_batch(self, req: BatchRequest) -> BatchResult:
        from transformers import DynamicCache
        from transformers.cache_utils import CacheLayerMixin

        self.check_request(req)
        model = self.loaded.model
        dev = self.device
        lengths = [len(r) for r in req.rows]
        width = max(lengths)
        batch = len(req.rows)
        ids = torch.tensor(
            [[self.pad_id] * (width - n) + r for r, n in zip(req.rows, lengths, strict=True)],
            device=dev,
        )
        # Equal lengths run without a mask (the kernel path an unpadded batch takes); ragged
        # batches are left-padded with a mask. Prover and verifier both derive this from shape.
        ragged = len(set(lengths)) > 1
        mask = None
        pos = None
        if ragged:
            mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths], device=dev)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
        probes = req.probes
        probe_idx = torch.tensor(req.probe_rows, device=dev, dtype=torch.long)
        hidden: list[torch.Tensor] = []
        top_vals: list[torch.Tensor] = []
        top_ids: list[torch.Tensor] = []
        pending: list[torch.Tensor] = []
        pending_bytes = 0
        # Teacher forcing as one select per step (not a write per row): replay stays launch-lean.
        forced_ids = forced_rows = None
        if req.forced is not None:
            n = req.decode_steps + 1
            forced_rows = torch.tensor([row is not None for row in req.forced], device=dev)
            forced_ids = torch.tensor(
                [list(row[:n]) if row is not None else [0] * n for row in req.forced],
                device=dev,
                dtype=torch.long,
            )
        cache = DynamicCache(config=model.config)
        steps: list[torch.Tensor] = []

        def reduce_pending() -> None:
            nonlocal pending_bytes
            if not pending:
                return
            assert probes is not None  # logits are pending only when probes.logits
            chunk = torch.stack(pending, dim=1)[probe_idx]
            v, i = torch.topk(chunk, probes.topk, dim=-1)
            top_vals.append(v)
            top_ids.append(i)
            pending.clear()
            pending_bytes = 0

        def forward(input_ids: torch.Tensor, step: int) -> torch.Tensor:
            nonlocal pending_bytes
            out = self._base(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=pos,
                past_key_values=cache,
                use_cache=True,
            )
            h = out.last_hidden_state[:, -1:, :]
            last = self._head(h)[:, -1, :]
            if probes and probes.hidden:
                hidden.append(h)
            if probes and probes.logits:
                pending.append(last)
                pending_bytes += last.numel() * last.element_size()
                if pending_bytes >= _PENDING_LOGITS_BYTES:
                    reduce_pending()
            nxt = last.argmax(dim=-1)
            if forced_ids is not None and forced_rows is not None:  # set together
                nxt = torch.where(forced_rows, forced_ids[:, step], nxt)
            return nxt

        with (
            _sdpa_context(self.sdpa_backend),
            regional.active() if self.compiled else nullcontext(),
        ):
            self._sync()
            t0 = time.perf_counter()
            nxt = forward(ids, 0)
            steps.append(nxt)
            if self.compiled:
                regional.settle(cache)
            self._sync()
            t1 = time.perf_counter()
            for s in range(1, req.decode_steps + 1):
                if req.deadline is not None and time.monotonic() > req.deadline:
                    raise OverBudget(f"stopped after {s - 1} of {req.decode_steps} decode steps")
                if mask is not None and pos is not None:  # set together (ragged)
                    mask = torch.cat([mask, mask.new_ones((batch, 1))], dim=-1)
                    pos = pos[:, -1:] + 1
                nxt = forward(nxt[:, None], s)
                steps.append(nxt)
            self._sync()
            t2 = time.perf_counter()

        if probes and probes.logits:
            reduce_pending()
        # One copy off the device, at the end.
        tokens = torch.stack(steps, dim=1).cpu().tolist()
        rows: dict[int, RowResult] = {ri: RowResult(tokens[ri]) for ri in req.probe_rows}
        if probes:
            stacked: dict[str, torch.Tensor] = {}
            if probes.keys:
                for layer in probes.layers:
                    layer_cache = cache.layers[layer]
                    # Full-attention layers, filled by the forward passes above.
                    assert isinstance(layer_cache, CacheLayerMixin) and layer_cache.keys is not None
                    k = layer_cache.keys[probe_idx, :, width - 1 :, :]
                    stacked[key_probe(layer)] = k.permute(0, 2, 1, 3).flatten(2)
            if hidden:
                stacked[HIDDEN_PROBE] = torch.cat(hidden, dim=1)[probe_idx]
            if top_vals:
                stacked[TOPK_VALUES] = torch.cat(top_vals, dim=1)
                stacked[TOPK_IDS] = torch.cat(top_ids, dim=1)
            host = {name: t.cpu() for name, t in stacked.items()}
            for j, ri in enumerate(req.probe_rows):
                rows[ri].probes = {name: Blob.from_torch(t[j]) for name, t in host.items()}
        schedule = {
            "kind": "static",
            "row_lengths": lengths,
            "decode_steps": req.decode_steps,
            "padding": "left" if ragged else "none",
        }
        return BatchResult(rows, schedule, t1 - t0, t2 - t1, tokens)
