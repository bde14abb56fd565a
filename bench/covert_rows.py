"""Detection of the batch cheat with and without row manifests (issue 14, item 3), on the CPU.

The agent's own engine loop (`agents/worker.py`, in process, real tiny model, one torch thread)
serves short requests as the red-team batch cheat does (`[redteam] actual_batch = B`: each
request beside B-1 filler rows, declared batch 1), in each way it can treat its row manifest
(`hide_rows`: "" lists the fillers, "strip" strips them from everything, "forge" declares batch
B and lists invented requests). Every record is then judged by the daemon's `Judge` twice: with
row manifests checked (`[limits] manifests = "require"`, its sibling commitments in the book as
the daemon's intake holds them) and without (`"off"`: numerics alone, the old protocol). An
honest agent's records are judged too (false positives). Flagged = any verdict but `match`.

    PYTHONPATH=. python bench/covert_rows.py [--records 50] [--dtypes bfloat16,float32]
        [--batches 4,8] [--max-tokens 4] [--prompt-words 2,8] [--device cpu] [--model tiny]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import random
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch
import zmq

from fpmon.agents.config import AgentConfig, EngineConfig, RedTeamConfig
from fpmon.agents.parts import parts_for
from fpmon.agents.store import RecordLog
from fpmon.agents.worker import Job
from fpmon.engines.base import ProbeSpec, default_layers
from fpmon.engines.hf import HFEngine
from fpmon.replay.calibration import Calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.judge import Judge, JudgeOptions
from fpmon.replay.rows import RowBook
from fpmon.setups import Dtype
from fpmon.wire import Commit, SubmitRequest
from fpmon.wire.codec import payload
from fpmon.wire.messages import ClientRequest

WORDS = [
    "the",
    "verifier",
    "replays",
    "a",
    "secret",
    "sample",
    "of",
    "records",
    "and",
    "every",
    "node",
    "commits",
    "to",
    "what",
    "it",
    "ran",
    "rounding",
    "leaves",
    "a",
    "fingerprint",
    "of",
    "batch",
    "size",
    "kernels",
    "and",
    "dtype",
]


def serve(
    engine: HFEngine,
    dtype: str,
    redteam: RedTeamConfig,
    n: int,
    max_tokens: int,
    words: tuple[int, int],
    rng: random.Random,
) -> list[tuple[Commit, bytes]]:
    """`n` short requests through the agent's engine loop, one at a time (as they arrive)."""
    with tempfile.TemporaryDirectory() as tmp:
        # The declared setup (what the red team's records claim): the engine's own but batch.
        cfg = AgentConfig(
            node="bench", state_dir=Path(tmp), engine=EngineConfig(dtype=cast(Dtype, dtype))
        )
        store = RecordLog(cfg.db_path, node="bench")
        commits: queue.Queue[Commit | None] = queue.Queue()
        ctx: zmq.Context[Any] = zmq.Context()
        probes = ProbeSpec(tuple(default_layers(engine.num_layers)))
        make = parts_for(redteam, "bench").worker  # the honest worker, or the red team's
        w = make(cfg, engine, store, ctx, "inproc://r", commits, probes)
        out = []
        try:
            for i in range(n):
                prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(*words)))
                req = SubmitRequest(
                    node="client",
                    t=time.time(),
                    request_id=f"r{i}",
                    prompt=prompt,
                    max_tokens=max_tokens,
                )
                w.serve([Job([b"c"], req, time.monotonic(), ClientRequest(submit=payload(req)))])
                while not commits.empty():
                    c = commits.get()
                    assert c is not None
                    status, data = store.get(c.seq)
                    assert status == "ok" and data is not None
                    out.append((c, data))
        finally:
            store.close()
            ctx.term()
        return out


def judged(
    engines: dict[str, HFEngine], records: list[tuple[Commit, bytes]], policy: str, device: str
) -> Counter:
    # The prover's engines are the reference: same device, the numerics are the bench's subject.
    models = {e.model_name: e.model_name for e in engines.values()}
    cache = EngineCache(models, device, factory=lambda spec, setup, dev: engines[setup.dtype])
    opts = JudgeOptions(False, manifests=policy, link_wait_s=0.0)  # type: ignore[arg-type]
    judge = Judge(cache, Calibration(), opts)
    book = RowBook()
    for c, _ in records:  # every commit verified, as the daemon's intake holds them
        book.add(c)
    judge.rows = book
    return Counter(judge.judge(c, data).verdict.status for c, data in records)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--records", type=int, default=50)
    ap.add_argument("--dtypes", default="bfloat16,float32")
    ap.add_argument("--batches", default="4,8")
    ap.add_argument("--max-tokens", type=int, default=4)
    ap.add_argument("--prompt-words", default="2,8", help="prompt length range, in words")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    logging.getLogger("fpmon.agent.redteam").disabled = True  # each run would say RED-TEAM
    if a.device == "cpu":
        torch.set_num_threads(1)  # as agents and the daemon run on a CPU
    dtypes = a.dtypes.split(",")
    engines = {d: HFEngine(a.model, dtype=d, attn_impl="sdpa", device=a.device) for d in dtypes}
    rows = []
    t0 = time.time()
    for dtype in dtypes:
        runs = [("honest", 1, RedTeamConfig())] + [
            (v or "listed", b, RedTeamConfig(enabled=True, actual_batch=b, hide_rows=v))
            for b in (int(x) for x in a.batches.split(","))
            for v in ("", "strip", "forge")
        ]
        for variant, batch, rt in runs:
            rng = random.Random(a.seed)
            lo, hi = (int(x) for x in a.prompt_words.split(","))
            recs = serve(engines[dtype], dtype, rt, a.records, a.max_tokens, (lo, hi), rng)
            off, on = (
                judged(engines, recs, "off", a.device),
                judged(engines, recs, "require", a.device),
            )
            r = {
                "dtype": dtype,
                "actual_batch": batch,
                "variant": variant,
                "records": len(recs),
                "flagged_without": len(recs) - off["match"],
                "flagged_with": len(recs) - on["match"],
                "without": dict(off),
                "with": dict(on),
            }
            rows.append(r)
            print(
                f"{dtype:8}  actual_batch {batch}  {variant:6}  "
                f"flagged without manifests {r['flagged_without']:3}/{len(recs)}, "
                f"with {r['flagged_with']:3}/{len(recs)}  {dict(on)}",
                flush=True,
            )
    took = time.time() - t0
    print(f"{len(rows)} configurations, {a.records} records each, {took:.0f} s")
    if a.json:
        doc = {"args": {**vars(a), "json": str(a.json)}, "rows": rows, "seconds": round(took)}
        a.json.write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
