"""What `compiled = true` costs a verifier (issue 14, item 2): warm-up per shape class, a warm
restart, and the replay of a compiled record against the same record eager.

One run, one process per phase (dynamo's state is per process): cold warm-up of each shape class
(batch 1, batch 1 longer, batch 4, padded batch 2) with a fresh inductor cache; the same in a new
process with that cache kept (a restarted replay daemon); then steady-state teacher-forced replays
of each record, compiled vs eager. `--stack` also times the old whole-stack compile of the first
shape class (torch.compile of the decoder stack, what `compiled` meant before) for the ratio.

    python bench/compile_cost.py --model random:qwen2.5-1.5b --device cuda [--stack]
    python bench/compile_cost.py --model random:qwen2.5-0.5b --device cpu --stack
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

# (rows as indices into the prompt set, decode steps); the prompts are 32, 40 and 12 tokens.
SHAPES = {
    "bs1": ([0], 32),
    "bs1-long": ([1], 48),
    "bs4": ([0, 0, 0, 0], 32),
    "padded bs2": ([0, 2], 32),
}


def phase(args: argparse.Namespace, mode: str) -> dict:
    """One process: build the engine, run each shape class once (warm-up), then `--repeats`
    teacher-forced replays of each; report seconds and dynamo's graph count."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    import torch
    import torch._dynamo

    from fpmon.engines.base import BatchRequest, ProbeSpec, default_layers
    from fpmon.engines.hf import HFEngine

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    eng = HFEngine(args.model, dtype=args.dtype, device=args.device, compiled=mode == "regional")
    if mode == "stack":  # the old meaning of `compiled`, for the side-by-side
        eng._base = torch.compile(eng._base, dynamic=True)
    load_s = time.perf_counter() - t
    base = eng.encode("The treaty requires the parties to keep a record of every inspection, ")
    prompts = [(base * 4)[:32], (base * 4)[:40], (base * 4)[:12]]
    spec = ProbeSpec(layers=tuple(default_layers(eng.num_layers)))
    shapes = list(SHAPES.items())[: 1 if mode == "stack" else None]
    warm: dict[str, float] = {}
    outputs: dict[str, list[list[int]]] = {}
    for name, (rows, steps) in shapes:
        req = BatchRequest([prompts[r] for r in rows], steps, list(range(len(rows))), spec)
        t = time.perf_counter()
        res = eng.run_batch(req)
        warm[name] = time.perf_counter() - t
        outputs[name] = res.all_outputs
        print(f"  [{mode}] {name}: first run {warm[name]:.1f} s", file=sys.stderr, flush=True)
    replay: dict[str, float] = {}
    for name, (rows, steps) in shapes:
        forced: list[list[int] | None] = list(outputs[name])
        req = BatchRequest([prompts[r] for r in rows], steps, list(range(len(rows))), spec, forced)
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            eng.run_batch(req)
            times.append(time.perf_counter() - t)
        replay[name] = sorted(times)[len(times) // 2]
    return {
        "mode": mode,
        "load_s": load_s,
        "first_run_s": warm,
        "replay_median_s": replay,
        "graphs": int(torch._dynamo.utils.counters["stats"]["unique_graphs"]),
    }


def run_phase(args: argparse.Namespace, mode: str, cache: str) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, __file__, "--phase", mode, "--model", args.model, "--device",
           args.device, "--dtype", args.dtype, "--repeats", str(args.repeats),
           "--threads", str(args.threads)]  # fmt: skip
    t = time.perf_counter()
    done = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, text=True, timeout=args.limit_s)
    if done.returncode:
        raise SystemExit(f"phase {mode} failed (exit {done.returncode})")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["process_s"] = time.perf_counter() - t
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--stack", action="store_true", help="also time the whole-stack compile")
    ap.add_argument("--limit-s", type=float, default=900, help="per phase process")
    ap.add_argument("--json", help="write every figure here")
    ap.add_argument("--phase", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        print(json.dumps(phase(args, args.phase)))
        return 0
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="fpmon-inductor-") as cache:
        res["eager"] = run_phase(args, "eager", cache)
        res["regional cold"] = run_phase(args, "regional", cache)
        res["regional warm restart"] = run_phase(args, "regional", cache)
    if args.stack:
        with tempfile.TemporaryDirectory(prefix="fpmon-inductor-") as cache:
            res["stack cold"] = run_phase(args, "stack", cache)
    first = next(iter(SHAPES))
    print(f"\nmodel {args.model} on {args.device}, {args.dtype}; first run of each shape class (s)")
    cols = list(res)
    print(f"{'shape class':<14}" + "".join(f"{c:>24}" for c in cols))
    for name in SHAPES:
        cells = [res[c]["first_run_s"].get(name) for c in cols]
        print(
            f"{name:<14}" + "".join(f"{x:>24.1f}" if x is not None else f"{'-':>24}" for x in cells)
        )
    print(f"{'graphs':<14}" + "".join(f"{res[c]['graphs']:>24}" for c in cols))
    print("\nsteady teacher-forced replay, median (s): compiled / eager")
    for name in SHAPES:
        e, r = res["eager"]["replay_median_s"][name], res["regional cold"]["replay_median_s"][name]
        print(f"{name:<14}{r:>10.3f} / {e:.3f} = {r / e:.2f}")
    cold = sum(res["regional cold"]["first_run_s"].values())
    warm = sum(res["regional warm restart"]["first_run_s"].values())
    print(f"\nwarm-up of all {len(SHAPES)} shape classes: cold {cold:.1f} s, "
          f"warm restart {warm:.1f} s ({warm / cold:.2f})")  # fmt: skip
    if "stack cold" in res:
        s, r = res["stack cold"]["first_run_s"][first], res["regional cold"]["first_run_s"][first]
        print(f"first shape class ({first}): whole stack {s:.1f} s, per layer {r:.1f} s "
              f"(ratio {r / s:.3f})")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
