"""Replay cost ratio: reference time to verify a request / time the prover spent on it.

Faithful (same shape, teacher-forced) decode replay on the CPU tiny model, prover and verifier
side by side in one run. Target (issue 5): <= 1.2. Two ratios are printed:
  engine  — the reference engine's prefill+decode time / the prover's committed prefill+decode;
  verify  — the whole verification (decode record, load-cached engine, replay, compare) wall
            time / the prover's committed time.

    python bench/replay_cost.py [requests] [decode_steps] [device]
"""

from __future__ import annotations

import os
import statistics
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from fpmon.engines.hf import HFEngine
from fpmon.replay.calibration import Calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.judge import Judge, JudgeOptions
from fpmon.testing.fleet import ProverNode

TARGET = 1.2
SETUPS = [("bfloat16", "sdpa", 1), ("float32", "sdpa", 4), ("bfloat16", "eager", 2)]


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    device = sys.argv[3] if len(sys.argv) > 3 else "cpu"
    if device == "cpu":
        import torch

        torch.set_num_threads(1)  # as agents and the daemon run on a CPU; steadier when shared
    node = ProverNode("bench")
    provers = {(d, a): HFEngine("tiny", dtype=d, attn_impl=a, device=device) for d, a, _ in SETUPS}
    judge = Judge(EngineCache({"tiny": "tiny"}, device), Calibration(), JudgeOptions(False))
    engine_ratios, verify_ratios = [], []
    for i in range(n):
        for dtype, attn, bs in SETUPS:
            e = provers[(dtype, attn)]
            prompts = [
                e.encode(f"Request {i}.{r}: the verifier replays a secret sample of records.")
                for r in range(bs)
            ]
            # A batch of bs requests, as an agent serves them; the last row's record is judged.
            c = node.make_batch(e, prompts, decode_steps=steps)[-1]
            committed = c.prefill_s + c.decode_s
            t0 = time.perf_counter()
            j = judge.judge(c, node.records[c.seq])
            wall = time.perf_counter() - t0
            assert j.verdict.status == "match", j.verdict
            if i == 0:
                continue  # first request per setup loads the reference engine: not steady state
            engine_ratios.append(j.reference_s / committed)
            verify_ratios.append(wall / committed)
    node.close()
    eng, ver = statistics.median(engine_ratios), statistics.median(verify_ratios)
    print(
        f"replay cost ratio ({device} tiny, {steps} decode steps, setups {SETUPS}, "
        f"{len(engine_ratios)} requests):"
    )
    for name, vals, med in (("engine", engine_ratios, eng), ("verify", verify_ratios, ver)):
        p90 = sorted(vals)[int(0.9 * len(vals))]
        ok = "PASS" if med <= TARGET else "FAIL"
        print(f"  {name}: median {med:.3f} (p90 {p90:.3f})  target <= {TARGET} {ok}")
    return 0 if ver <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
