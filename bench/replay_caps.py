"""What a record declaring batch 2048 costs the verifier, with and without the replay caps.

The prover runs batch 1 and declares (and schedules) 2048, as a node dodging replay would; the
record is then judged on the CPU tiny model, one torch thread (as the daemon runs on a CPU):
  capped    — default caps (max_batch 256): refused before any replay;
  budget    — batch cap lifted, max_replay_s as given: the replay stops at the wall clock;
  uncapped  — batch cap lifted, no budget to speak of: the full replay (the old behaviour).
Run each mode in its own process (peak RSS is per process); BATCH (default 2048) is the
declared batch, e.g. 256 for what the default caps still let through:

    python bench/replay_caps.py capped|budget|uncapped [max_replay_s] [BATCH]
"""

from __future__ import annotations

import os
import resource
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch

from fpmon.engines.hf import HFEngine
from fpmon.replay.calibration import Calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.judge import Judge, JudgeOptions
from fpmon.replay.limits import Caps
from fpmon.testing.fleet import ProverNode


def main() -> int:
    mode = sys.argv[1] if len(sys.argv) > 1 else "capped"
    budget = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 2048
    caps = {
        "capped": Caps(),
        "budget": Caps(max_batch=4096, max_replay_s=budget),
        "uncapped": Caps(max_batch=4096, max_replay_s=1e6),
    }[mode]
    torch.set_num_threads(1)
    engine = HFEngine("tiny", dtype="bfloat16", attn_impl="sdpa", device="cpu")
    node = ProverNode("bench")
    try:
        ids = engine.encode("The verifier replays a secret sample of records")
        commit = node.make(engine, ids, decode_steps=8, declare={"batch_size": batch})
        data = node.records[commit.seq]
        cache = EngineCache({"tiny": "tiny"}, factory=lambda spec, setup, dev: engine)
        # The declared rows beside the request have no client request behind them, which the
        # row manifest check would call covert_rows before any replay: this measures the replay.
        judge = Judge(cache, Calibration(), JudgeOptions(False, caps=caps, manifests="off"))
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        verdict = judge.judge(commit, data).verdict
        took = time.perf_counter() - t0
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finally:
        node.close()
    grew, peak = (rss1 - rss0) / 1024, rss1 / 1024
    print(
        f"{mode}: {verdict.status} in {took * 1000:.2f} ms; peak RSS {peak:.0f} MiB (+{grew:.0f})"
    )
    print(f"  reason: {verdict.reason[:160]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
