"""What telemetry sampling costs serving: throughput with and without the 1 Hz sampler.

One process, one engine, batches back to back; three sides alternate round by round (order
rotated each round, so drifting load hits all alike): `off` (no sampler), `nvml` (the agent's
`TelemetrySource` without GPM) and `gpm` (with GPM: one NVML GPM sample per GPU per tick), each
sampler a thread as in the agent's publisher, sampling and encoding the frame every `--every`
seconds. Prints tokens/s per side and the ratios side/off (goal: >= 0.99 at 1 Hz), plus the
sampler's own time per sample.

On this CPU host the engine runs on the CPU and the telemetry has no GPU (the host's /proc and
the engine process's CPU time): the ratio is the sampling thread's cost. On a GPU host with
`--device cuda` it is the cost of NVML and GPM sampling beside a real decode.

    python bench/telemetry_overhead.py [--device cpu] [--model tiny] [--batch 1] [--rounds 6]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

from fpmon.agents.telemetry import TelemetrySource
from fpmon.engines.base import BatchRequest
from fpmon.wire import encode

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PROMPT = "Inference nodes commit to their activations; a verifier replays a secret sample."


class Sampler(threading.Thread):
    """The publisher's telemetry duty alone: sample, encode, wait for the next tick."""

    def __init__(self, src: TelemetrySource, every: float) -> None:
        super().__init__(daemon=True)
        self.src, self.every = src, every
        self.stop_event = threading.Event()
        self.spent: list[float] = []
        self.last: dict | None = None

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop_event.is_set():
            t0 = time.perf_counter()
            t = self.src.sample()
            encode(t)
            self.spent.append(time.perf_counter() - t0)
            self.last = t.to_map()
            nxt += self.every
            self.stop_event.wait(max(0.0, nxt - time.monotonic()))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (as the agent)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per request")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=4.0, help="per side and round")
    ap.add_argument("--every", type=float, default=1.0, help="sampling interval (s)")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    import torch

    from fpmon.engines.hf import HFEngine

    torch.set_num_threads(args.threads)
    engine = HFEngine(args.model, dtype=args.dtype, device=args.device)
    rows = [engine.encode(PROMPT)] * args.batch
    req = BatchRequest(rows=rows, decode_steps=args.tokens - 1, probe_rows=[], probes=None)
    sources = {
        "nvml": TelemetrySource("bench", args.device, gpm=False),
        "gpm": TelemetrySource("bench", args.device, gpm=True),
    }
    engine.run_batch(req)  # warm up
    sides = ["off", "nvml", "gpm"]
    tokens = dict.fromkeys(sides, 0)
    spent = dict.fromkeys(sides, 0.0)
    per_round: dict[str, list[float]] = {s: [] for s in sides}
    sample_s: dict[str, list[float]] = {"nvml": [], "gpm": []}
    last: dict[str, dict | None] = {}
    for r in range(args.rounds):
        order = sides[r % 3 :] + sides[: r % 3]
        for side in order:
            sampler = None
            if side != "off":
                sampler = Sampler(sources[side], args.every)
                sampler.start()
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < args.seconds:
                engine.run_batch(req)
                n += args.batch * args.tokens
            dt = time.perf_counter() - t0
            if sampler is not None:
                sampler.stop_event.set()
                sampler.join()
                sample_s[side] += sampler.spent
                last[side] = sampler.last
            tokens[side] += n
            spent[side] += dt
            per_round[side].append(n / dt)
    rate = {s: tokens[s] / spent[s] for s in sides}
    ratio = {s: rate[s] / rate["off"] for s in ("nvml", "gpm")}
    med = {
        s: statistics.median(a / b for a, b in zip(per_round[s], per_round["off"], strict=True))
        for s in ("nvml", "gpm")
    }
    gpus = (last.get("gpm") or {}).get("gpus", [])
    what = (
        f"NVML + GPM on {len(gpus)} GPU(s), GPM status: "
        + ", ".join(g.get("gpm_status", "?")[:40] for g in gpus)
        if gpus
        else f"no GPU in scope ({sources['gpm'].scope}): host /proc + engine process CPU only"
    )
    print(
        f"engine {engine.setup.summary()} on {args.device}, batch {args.batch}, "
        f"{args.tokens} tokens/request, {args.rounds} rounds x {args.seconds:g} s per side, "
        f"sampling every {args.every:g} s"
    )
    print(f"telemetry: {what}")
    print(f"{'side':6} {'tokens/s':>10} {'ratio':>7} {'median/round':>13} {'ms/sample':>10}")
    for s in sides:
        ms = statistics.median(sample_s[s]) * 1e3 if sample_s.get(s) else float("nan")
        r_all = 1.0 if s == "off" else ratio[s]
        r_med = 1.0 if s == "off" else med[s]
        print(f"{s:6} {rate[s]:10.1f} {r_all:7.3f} {r_med:13.3f} {ms:10.2f}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rate": rate,
                    "ratio": ratio,
                    "median_round_ratio": med,
                    "per_round": per_round,
                    "sample_ms_median": {
                        s: statistics.median(v) * 1e3 for s, v in sample_s.items() if v
                    },
                    "last_sample": last,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
