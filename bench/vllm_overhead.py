"""Throughput of the vLLM engine with capture + schedule recording vs without, same run.

Same process, same engine, same requests and driver loop; the only difference is fpmon's
worker hooks (probes) and the scheduler's step log. Rounds alternate (off, on, on, off, ...)
so drift on a shared machine hits both sides; printed: the ratio of medians, the median of
each round's paired ratio, and the ratio of the best (least disturbed) rounds. Throughput is
per second of this process's CPU time (vLLM runs in-process, one torch thread here), which
other jobs on a shared 2-core machine disturb far less than wall time; wall time is printed
beside it.

    python bench/vllm_overhead.py [--requests 16 --prompt-tokens 48 --decode-steps 32]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
# One OpenMP thread pinned to CPU 0: no barrier stalls when other jobs take the other core, so
# this process's CPU time measures its own work (override: VLLM_CPU_OMP_THREADS_BIND=auto).
os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, default=48)
    ap.add_argument("--decode-steps", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--budget", type=int, default=256, help="max_num_batched_tokens")
    args = ap.parse_args()

    from fpmon.engines.base import ProbeSpec, default_layers
    from fpmon.engines.batching import filler_ids
    from fpmon.engines.vllm import VLLMEngine
    from fpmon.engines.vllm.engine import VRequest

    eng = VLLMEngine(
        args.model,
        dtype=args.dtype,
        max_num_batched_tokens=args.budget,
        max_num_seqs=args.requests,
    )
    probes = ProbeSpec(tuple(default_layers(eng.num_layers)))
    # Staggered arrivals: prefill chunks and decodes share steps, as under real load.
    reqs = [
        VRequest(
            filler_ids(args.prompt_tokens, i, eng.vocab_limit), args.decode_steps + 1, arrival=2 * i
        )
        for i in range(args.requests)
    ]
    tokens = args.requests * (args.decode_steps + 1)

    attributed: list[float] = []

    def once(capture: bool) -> tuple[float, float]:
        eng.set_capture(capture)
        if capture:
            eng._ensure_hooks(probes)
            eng._rpc("fpmon_spent")  # reset the hooks' own clock
        c0, t0 = time.process_time(), time.perf_counter()
        run = eng.run_requests(reqs, probes)
        t_run = time.perf_counter() - t0
        if capture:  # the records' work is part of the cost: stack probes, build schedules
            t1 = time.perf_counter()
            eng.result_of(reqs, run, list(range(len(reqs))), probes, args.decode_steps)
            t_rec = time.perf_counter() - t1
            # Time inside fpmon's hooks + record building, as a share of this very run: both
            # sides of this ratio see the same machine load at the same moment.
            fpmon = eng._rpc("fpmon_spent") + t_rec
            attributed.append((t_run + t_rec - fpmon) / (t_run + t_rec))
        return tokens / (time.process_time() - c0), tokens / (time.perf_counter() - t0)

    once(True)
    once(False)  # warm both paths
    on: list[tuple[float, float]] = []
    off: list[tuple[float, float]] = []
    for r in range(args.rounds):
        order = (False, True) if r % 2 == 0 else (True, False)
        for capture in order:
            (on if capture else off).append(once(capture))
    print(
        f"setup      {eng.setup.summary()}, {args.requests} requests x "
        f"({args.prompt_tokens} prompt + {args.decode_steps} decode), budget {args.budget}, "
        f"{args.rounds} rounds each"
    )
    for k, what in ((0, "CPU"), (1, "wall")):
        m_on = statistics.median(x[k] for x in on)
        m_off = statistics.median(x[k] for x in off)
        # Each round's two runs sat side by side in time: their ratio cancels slow drift.
        pairs = statistics.median(a[k] / b[k] for a, b in zip(on, off, strict=True))
        # The least-disturbed round of each side: the usual estimate of intrinsic cost on a
        # machine other jobs share.
        best = max(x[k] for x in on) / max(x[k] for x in off)
        print(
            f"{what:4} without {m_off:8.1f} tok/s   with {m_on:8.1f} tok/s   "
            f"ratio: of medians {m_on / m_off:.3f}, median paired {pairs:.3f}, best {best:.3f}"
        )
    print(
        f"attributed: time outside fpmon's hooks and record building / whole run = "
        f"{statistics.median(attributed):.3f} (median of {len(attributed)} runs; excludes "
        "nn.Module's slower call path for hooked modules)"
    )
    eng.close()


if __name__ == "__main__":
    main()
