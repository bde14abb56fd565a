"""`fpmon lab run`: execute the battery on one machine, saving partial results as it goes.

After every setup the raw probes and the summary are rewritten (atomically), so a run cut
short by its time budget, or killed, still leaves everything measured so far.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from fpmon.engines.base import ProbeSpec, default_layers
from fpmon.errors import FpmonError
from fpmon.lab.battery import Spec, battery_specs, n_batches, run_spec
from fpmon.lab.prompts import PromptSet, make_prompts
from fpmon.lab.store import Entry, pack_entry, write_raw
from fpmon.lab.summary import summarize
from fpmon.progress import Progress

SUMMARY_KIND = "fpmon.lab.summary"
SUMMARY_VERSION = 1
# The compiled setup's warm-up, estimated so the budget skips a setup it cannot finish. The
# whole-stack compile ran past 190 s on an H100; compiling per decoder layer
# (fpmon/engines/regional.py) took 18 s for a 24-layer preset on this project's 2-core CPU
# (bench/compile_cost.py): a margin above that.
COMPILE_WARMUP_S = 60.0


@dataclass
class RunOptions:
    model: str
    device: str
    out: Path
    prompts: int = 64
    prompt_len: int = 32
    decode_steps: int = 16
    seed: int = 7
    experiments: tuple[str, ...] = ()
    stream_prompts: int = 32
    budget_s: float | None = None
    part: str = "main"
    force: bool = False
    topk: int = 8
    skip: tuple[str, ...] = ()
    layers: tuple[int, ...] = ()  # probed layers; () = the engine's default_layers
    keys_keep: int | None = None  # dims of each keys probe kept raw (None: all)


class LabLog:
    """Timestamped progress lines on stderr and in the run's log file (device runs have no tty)."""

    def __init__(self, path: Path, progress: Progress) -> None:
        self.path = path
        self.progress = progress
        self.t0 = time.monotonic()
        self._f = path.open("a")

    def __call__(self, text: str) -> None:
        line = f"[lab {time.monotonic() - self.t0:6.1f}s] {text}"
        self.progress.done()
        print(line, file=sys.stderr, flush=True)
        self._f.write(line + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def prepare_out(out: Path, part: str, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise FpmonError(f"--out {out} is a file: give a folder for the lab's results")
    mine = [out / f"summary-{part}.json", *out.glob(f"raw-{part}-*.bin")] if out.is_dir() else []
    existing = [p for p in mine if p.exists()]
    if existing and not force:
        raise FpmonError(
            f"{out} already holds results of part {part!r} ({existing[0].name}): pass --force "
            "to overwrite them, or choose another --out or --part"
        )
    out.mkdir(parents=True, exist_ok=True)


def _versions() -> dict[str, Any]:
    import torch
    import transformers

    v: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "",
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
    }
    if torch.backends.cudnn.is_available():
        v["cudnn"] = str(torch.backends.cudnn.version())
    return v


class LabRun:
    def __init__(self, opts: RunOptions, progress: Progress | None = None) -> None:
        self.opts = opts
        self.progress = progress or Progress()
        prepare_out(opts.out, opts.part, opts.force)
        self.log = LabLog(opts.out / f"log-{opts.part}.txt", self.progress)
        self.t0 = time.monotonic()
        self.results: dict[str, list[Entry]] = {}
        self.packed: list[bytes] = []  # each entry packed once (compression is not free)
        self.specs: dict[str, Spec] = {}
        self.summary: dict[str, Any] = {}
        self.per_batch_s: float | None = None
        self.phase = {"now": "idle"}

    # -- time budget ------------------------------------------------------------------------
    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def keep_going(self) -> bool:
        b = self.opts.budget_s
        return b is None or self.elapsed() < b

    def _budget_reason(self, spec: Spec) -> str:
        b = self.opts.budget_s
        if b is None or self.per_batch_s is None:
            return ""
        est = n_batches(spec, self.opts.prompts) * self.per_batch_s * (1 + spec.batch / 16)
        if spec.engine == "compiled":
            est += COMPILE_WARMUP_S
        if self.elapsed() + est > b:
            return (
                f"time budget: about {est:.0f} s needed, {max(b - self.elapsed(), 0):.0f} s "
                "left of --budget-s"
            )
        return ""

    # -- one setup --------------------------------------------------------------------------
    @contextmanager
    def _context(self, spec: Spec, engine: Any) -> Iterator[dict[str, Any]]:
        from fpmon.lab.busy import UtilSampler
        from fpmon.lab.variants import attention
        from fpmon.sidework import MemoryPressure, SideProcess, SideWork

        info: dict[str, Any] = {}
        with ExitStack() as stack:
            if spec.attn != engine.setup.attn_impl or spec.sdpa != engine.sdpa_backend:
                stack.enter_context(attention(engine, spec.attn, spec.sdpa))
            load = spec.load
            if load is not None:
                info["load"] = load.to_map()
                if load.kind != "none" and load.mode == "process":
                    proc = stack.enter_context(
                        SideProcess(load.kind, load.intensity, self.opts.device)
                    )
                    info["sidework"] = proc.info
                elif load.kind != "none":
                    want = load.phase

                    def active() -> bool:
                        return want == "all" or self.phase["now"] == want

                    sw = stack.enter_context(
                        SideWork(load.kind, load.intensity, engine.device, active)
                    )
                    info["sidework"] = {
                        "unloaded_rate": sw.rate(),
                        "unit": f"{sw.unit}/s",
                        "op_ms": sw.op_s * 1e3,
                        "duty": sw.duty,
                    }
                    info["_sw"] = sw
                if load.pressure:
                    mp = stack.enter_context(MemoryPressure(engine.device))
                    info["pressure_gib"] = mp.held / (1 << 30)
                sampler = stack.enter_context(UtilSampler(engine.device.index or 0))
                info["_sampler"] = sampler
            info["setup"] = engine.setup.replace(batch_size=spec.batch, slot=0).to_map()
            yield info
        if "_sampler" in info:
            info["nvml"] = info.pop("_sampler").result()
        if "_sw" in info:
            sw = info.pop("_sw")
            info["sidework"]["calls"] = sw.calls

    def run_one(self, spec: Spec, engine: Any, pset: PromptSet, probes: ProbeSpec) -> None:
        t = time.monotonic()
        with self._context(spec, engine) as info:

            def on_batch(done: int, total: int) -> None:
                self.phase["now"] = "idle"
                self.progress.update(done, total, spec.name)

            entries, complete = run_spec(
                spec,
                engine,
                pset,
                probes,
                keep_going=self.keep_going,
                on_batch=on_batch,
                keys_keep=self.opts.keys_keep,
            )
        if not entries:  # e.g. a compile warm-up that used up the time budget
            self.summary["skipped"][spec.name] = "time budget ended before its first batch"
            self.log(f"{spec.name}: no batch finished within the time budget")
            return
        self.results[spec.name] = entries
        refs = {e.prompt: e for e in self.results.get(spec.ref, [])}
        # Repeats under hidden work keep digests only (reproducible or not): raw stays small.
        keep = not (spec.load and spec.load.kind != "none" and spec.name.endswith(".r2"))
        self.packed += [pack_entry(e, refs.get(e.prompt), keep) for e in entries]
        line = {
            "experiment": spec.experiment,
            "ref": spec.ref,
            "change": spec.change,
            "complete": complete,
            "seconds": time.monotonic() - t,
            **info,
            **summarize(spec.name, spec.ref, self.results, pset.decode_steps),
        }
        self.summary["setups"][spec.name] = line
        if spec.name == "base" and entries:
            self.per_batch_s = line["seconds"] / max(len(entries), 1)
        vs = line.get("vs_ref")
        same = f", identical to {spec.ref}: {vs['identical']}/{vs['n']}" if vs else ""
        self.log(f"{spec.name}: {len(entries)} prompts in {line['seconds']:.1f} s{same}")

    # -- the whole run ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        import torch

        from fpmon.lab.variants import Engines

        o = self.opts
        specs = battery_specs(list(o.experiments), o.stream_prompts)
        for name in o.skip:  # checked before the (slow) model load
            if name not in {s.name for s in specs} or name == "base":
                raise FpmonError(
                    f"--skip {name}: not a setup of this battery (base cannot be skipped)"
                )
        specs = [s for s in specs if s.name not in o.skip]
        self.log(f"loading {o.model} (seeded float32, then per-dtype copies) on {o.device}")
        engines = Engines(o.model, o.device, self.progress)
        base = engines.get("bf16")
        pset = make_prompts(o.prompts, o.prompt_len, o.decode_steps, base.vocab_limit, o.seed)
        if o.layers == (-1,):  # --layers all
            o.layers = tuple(range(base.num_layers))
        bad = [n for n in o.layers if not 0 <= n < base.num_layers]
        if bad:
            raise FpmonError(
                f"--layers {bad[0]}: {engines.model_name} has layers 0..{base.num_layers - 1}"
            )
        layers = o.layers or tuple(default_layers(base.num_layers))
        probes = ProbeSpec(tuple(sorted(set(layers))), topk=o.topk)
        cuda = base.device.type == "cuda"
        self.summary = {
            "kind": SUMMARY_KIND,
            "v": SUMMARY_VERSION,
            "part": o.part,
            "meta": {
                "model": engines.model_name,
                "weights_digest": engines.weights_digest,
                "device": o.device,
                "gpu_name": torch.cuda.get_device_name(base.device) if cuda else "cpu",
                "prompts": pset.to_map(),
                "probes": probes.to_map(),
                "keys_keep": o.keys_keep,
                "experiments": list(o.experiments),
                "budget_s": o.budget_s,
                "command": " ".join(sys.argv),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                **_versions(),
            },
            "setups": {},
            "skipped": {},
            "checks": {},
            "complete": False,
        }
        self.log(
            f"{self.summary['meta']['gpu_name']}; weights {engines.weights_digest[:16]}; "
            f"{len(pset)} prompts x {o.prompt_len} tokens, {o.decode_steps} forced decode steps"
        )
        for name in o.skip:
            self.summary["skipped"][name] = "--skip"
        self.specs = {s.name: s for s in specs}
        # Warm-up (CUDA context, cuBLAS handles): its numbers are thrown away.
        run_spec(
            Spec("warmup", "repeat", max_prompts=1), base, pset, probes, keep_going=lambda: True
        )
        phase_hook = None
        for spec in specs:
            if spec.cuda_only and not cuda:
                # A whole GPU-only experiment is one line, not one per condition.
                key = spec.experiment if spec.experiment == "streams" else spec.name
                if key not in self.summary["skipped"]:
                    self.summary["skipped"][key] = spec.cuda_only
                    self.log(f"{key}: skipped ({spec.cuda_only})")
                continue
            reason = self._budget_reason(spec)
            if reason:
                self.summary["skipped"][spec.name] = reason
                self.log(f"{spec.name}: skipped ({reason})")
                continue
            try:
                engine = engines.get(spec.engine)
                if spec.engine == "compiled":
                    self.log("compiled: warming up torch.compile (not timed)")
                    run_spec(
                        Spec("warmup", "compile", max_prompts=1),
                        engine,
                        pset,
                        probes,
                        keep_going=lambda: True,
                    )
                if spec.load is not None and phase_hook is None:
                    phase_hook = base.loaded.model.register_forward_pre_hook(
                        self._on_forward, with_kwargs=True
                    )
                self.run_one(spec, engine, pset, probes)
            except Exception as e:  # one failed kernel path must not lose the rest
                if isinstance(e, KeyboardInterrupt):
                    raise
                msg = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                self.summary["skipped"][spec.name] = msg[:300]
                self.log(f"{spec.name}: {msg[:300]}")
                if cuda:
                    torch.cuda.synchronize()
            self._save()
        if phase_hook is not None:
            phase_hook.remove()
        if "timing" in o.experiments:
            self._busy(base, pset, probes, cuda)
        if "repeat" in o.experiments and self.keep_going():
            self._capture_check(base, probes)
        self.summary["complete"] = True
        self.summary["elapsed_s"] = self.elapsed()
        self._save()
        self.log(f"done in {self.elapsed():.0f} s")
        self.log.close()
        return self.summary

    def _on_forward(self, _mod: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        self.phase["now"] = "prefill" if ids is not None and ids.shape[1] > 1 else "decode"

    def _busy(self, engine: Any, pset: PromptSet, probes: ProbeSpec, cuda: bool) -> None:
        if not cuda:
            self.summary["skipped"]["timing"] = "busy fraction " + "needs a CUDA device"
            self.log("timing: skipped (needs a CUDA device)")
            return
        from fpmon.lab.busy import kernel_busy

        out = {}
        for bs, n in ((1, 2), (16, 16)):
            spec = Spec(f"busy.bs{bs}", "timing", batch=bs, max_prompts=n)
            try:
                out[f"bs{bs}"] = kernel_busy(
                    partial(run_spec, spec, engine, pset, probes, keep_going=lambda: True)
                )
            except Exception as e:
                out[f"bs{bs}"] = {"error": f"{type(e).__name__}: {e}"[:300]}
            self.log(f"busy fraction bs{bs}: {out[f'bs{bs}']}")
        self.summary["busy"] = out

    def _capture_check(self, engine: Any, probes: ProbeSpec) -> None:
        """Issue 2 on this device: the same capture twice, and replay of it, bit for bit."""
        from fpmon.capture import capture_prompts
        from fpmon.compare import compare_records
        from fpmon.reproduce import replay_record

        texts = [f"The verifier replays request {i} on its reference GPU." for i in range(4)]
        steps = self.opts.decode_steps
        a = capture_prompts(engine, texts, decode_steps=steps, probes=probes)
        b = capture_prompts(engine, texts, decode_steps=steps, probes=probes)
        c = [replay_record(engine, r) for r in a]
        self.summary["checks"]["capture_path"] = {
            "prompts": len(texts),
            "decode_steps": steps,
            "capture_repeat_identical": sum(
                compare_records(x, y).identical for x, y in zip(a, b, strict=True)
            ),
            "replay_identical": sum(
                compare_records(x, y).identical for x, y in zip(a, c, strict=True)
            ),
        }
        self.log(f"capture path: {self.summary['checks']['capture_path']}")

    def _save(self) -> None:
        o = self.opts
        write_raw(o.out, o.part, self.packed, self.summary["meta"])
        path = o.out / f"summary-{o.part}.json"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.summary, indent=1, sort_keys=False, default=str))
        tmp.replace(path)
