"""The battery: which setups run, in which batch arrangement, and how one is executed.

Every setup runs the same prompt set with the same forced continuation, so each prompt's probes
under setup A and setup B differ only by the computation. Batches of size b hold b of the
prompts (every row probed: each is one request at its slot); the last batch is completed with
fillers. A spec compares against `ref` on the same machine; `change` marks setups that change
the declared computation (the cheats a verifier must see).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from fpmon.engines.base import BatchRequest, ProbeSpec
from fpmon.engines.batching import filler_ids
from fpmon.engines.hf import HFEngine
from fpmon.errors import FpmonError
from fpmon.lab.prompts import PromptSet
from fpmon.lab.store import Entry
from fpmon.sidework import Load

EXPERIMENTS = (
    "repeat",
    "batch",
    "composition",
    "attention",
    "compile",
    "dtype",
    "streams",
    "timing",
)
BATCH_SIZES = (2, 4, 8, 16)
NEEDS_CUDA = "needs a CUDA device (GPU-only experiment)"


@dataclass(frozen=True)
class Spec:
    name: str
    experiment: str
    engine: str = "bf16"
    attn: str = "sdpa"
    sdpa: str = "default"
    batch: int = 1
    arrange: str = "grouped"  # grouped | rotated | filler
    ref: str = "base"
    change: bool = True
    cuda_only: str = ""
    load: Load | None = None
    max_prompts: int | None = None


def parse_experiments(text: str | None) -> list[str]:
    if not text or text == "all":
        return list(EXPERIMENTS)
    names = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in names if x not in EXPERIMENTS]
    if bad:
        raise FpmonError(
            f"unknown experiment {bad[0]!r}: choose from {', '.join(EXPERIMENTS)} (or all)"
        )
    return names


def _stream_specs(stream_prompts: int) -> list[Spec]:
    heavy_c = Load("compute", "heavy")
    conditions = [
        (Load(), False),
        (heavy_c, True),
        (Load("memory", "heavy"), True),
        (Load("compute", "light"), True),
        (Load("compute", "medium"), True),
        (Load("compute", "heavy", phase="prefill"), True),
        (Load("compute", "heavy", phase="decode"), True),
        (Load("compute", "heavy", mode="process"), True),
        (Load(pressure=True), True),
        (Load("compute", "heavy", pressure=True), True),
    ]
    specs = []
    # Batch 16 first: a busy declared workload (where hidden work competes), and cheap.
    for bs, cap in ((16, None), (1, stream_prompts)):
        suffix = ".bs16" if bs == 16 else ""
        ref = f"load.none{suffix}"
        for load, repeat in conditions:
            name = f"load.{load.label()}{suffix}"
            reps = [name, f"{name}.r2"] if repeat or load.kind == "none" else [name]
            for n in reps:
                specs.append(
                    Spec(
                        n,
                        "streams",
                        batch=bs,
                        ref=ref if n != ref else "",
                        change=False,
                        cuda_only=NEEDS_CUDA,
                        load=load,
                        max_prompts=cap,
                    )
                )
    return specs


def battery_specs(experiments: list[str], stream_prompts: int = 32) -> list[Spec]:
    specs = [Spec("base", "repeat", ref="", change=False)]
    if "repeat" in experiments:
        specs.append(Spec("base.r2", "repeat", change=False))
    if "batch" in experiments:
        specs += [Spec(f"bs{b}", "batch", batch=b) for b in BATCH_SIZES]
    if "composition" in experiments:
        if "batch" not in experiments:
            specs.append(Spec("bs4", "batch", batch=4))
        specs += [
            Spec("bs4.rot", "composition", batch=4, arrange="rotated", ref="bs4", change=False),
            Spec("bs4.fill", "composition", batch=4, arrange="filler", ref="bs4", change=False),
        ]
    if "attention" in experiments:
        specs += [
            Spec("attn.eager", "attention", attn="eager"),
            Spec("sdpa.math", "attention", sdpa="math"),
            Spec("sdpa.flash", "attention", sdpa="flash", cuda_only=NEEDS_CUDA),
            Spec("sdpa.efficient", "attention", sdpa="efficient", cuda_only=NEEDS_CUDA),
            Spec("sdpa.cudnn", "attention", sdpa="cudnn", cuda_only=NEEDS_CUDA),
        ]
    if "dtype" in experiments:
        specs += [Spec("fp16", "dtype", engine="fp16"), Spec("int8w", "dtype", engine="int8w")]
    if "compile" in experiments:
        specs.append(Spec("compiled", "compile", engine="compiled"))
    if "streams" in experiments:
        specs += _stream_specs(stream_prompts)
    return specs


@dataclass
class Batch:
    rows: list[list[int]]
    forced: list[list[int] | None]
    who: list[tuple[int, int]]  # (row, prompt index) of the real prompts


def arrange(spec: Spec, pset: PromptSet, vocab_limit: int) -> list[Batch]:
    """The batches a spec runs: each real prompt exactly once, fillers completing shapes."""
    n = min(spec.max_prompts or len(pset), len(pset))
    idx = list(range(n))
    b = spec.batch
    length = pset.prompt_len
    batches: list[Batch] = []
    if spec.arrange == "filler":  # replay-style: one request at slot i % b among fillers
        for i in idx:
            slot = i % b
            rows = [filler_ids(length, r, vocab_limit) for r in range(b)]
            forced: list[list[int] | None] = [None] * b
            rows[slot], forced[slot] = list(pset.prompts[i]), list(pset.forced[i])
            batches.append(Batch(rows, forced, [(slot, i)]))
        return batches
    if spec.arrange == "rotated":  # other companions and slots than "grouped"
        idx = [int(x) for x in np.random.default_rng(pset.seed + 1).permutation(idx)]
    for start in range(0, n, b):
        chunk = idx[start : start + b]
        rows = [list(pset.prompts[i]) for i in chunk]
        forced = [list(pset.forced[i]) for i in chunk]
        who = list(enumerate(chunk))
        while len(rows) < b:
            rows.append(filler_ids(length, len(rows), vocab_limit))
            forced.append(None)
        batches.append(Batch(rows, forced, who))
    return batches


def run_spec(
    spec: Spec,
    engine: HFEngine,
    pset: PromptSet,
    probes: ProbeSpec,
    *,
    keep_going: Callable[[], bool],
    on_batch: Callable[[int, int], None] | None = None,
    keys_keep: int | None = None,
) -> tuple[list[Entry], bool]:
    """Run a spec's batches; returns (entries, complete). Stops early when keep_going() fails."""
    batches = arrange(spec, pset, engine.vocab_limit)
    entries: list[Entry] = []
    for k, batch in enumerate(batches):
        if not keep_going():
            return entries, False
        res = engine.run_batch(
            BatchRequest(
                rows=batch.rows,
                decode_steps=pset.decode_steps,
                probe_rows=[r for r, _i in batch.who],
                probes=probes,
                forced=batch.forced,
            )
        )
        for r, i in batch.who:
            entries.append(
                Entry.from_probes(
                    spec.name,
                    i,
                    spec.batch,
                    r,
                    res.prefill_s,
                    res.decode_s,
                    res.rows[r].probes,
                    keys_keep,
                )
            )
        if on_batch:
            on_batch(k + 1, len(batches))
    return entries, True


def n_batches(spec: Spec, n_prompts: int) -> int:
    n = min(spec.max_prompts or n_prompts, n_prompts)
    return n if spec.arrange == "filler" else -(-n // spec.batch)
