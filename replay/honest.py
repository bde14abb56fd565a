"""Honest load, judged: false positives of the daemon's judge counted at scale (issue 14, item 4).

An honest node serves batches the way an agent does (`agents/worker.py`, `_run`): the
requests waiting together form one batch, each its own row, prompts of mixed lengths
(left-padded with an attention mask), every row probed, one decode length per batch; each
request becomes one record, committed with the setup it really ran. The daemon's `Judge`
(real reference engines from `EngineCache`, as the daemon builds them) replays every record
among fillers of the recorded row lengths. An honest record judged anything but `match` is a
false positive.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fpmon.capture import record_from_row
from fpmon.engines.base import BatchRequest, ProbeSpec, default_layers
from fpmon.manifest import batch as manifest_of
from fpmon.manifest import root, token_request
from fpmon.records import Record
from fpmon.replay.judge import Judge
from fpmon.wire import Commit

# What a request mix looks like: mostly small batches, some full ones; prompts from a few
# tokens to a paragraph; answers from one token to a few dozen.
BATCH_SIZES = (1, 1, 1, 2, 2, 3, 4, 4, 6, 8)
PROMPT_TOKENS = (2, 96)  # log-uniform between these
DECODE_STEPS = (0, 3, 7, 15, 23)


@dataclass
class Tally:
    records: int = 0
    batches: int = 0
    statuses: Counter = field(default_factory=Counter)
    by_batch: Counter = field(default_factory=Counter)  # records per batch size
    bad: list[dict[str, Any]] = field(default_factory=list)  # every non-match, in short
    seconds: float = 0.0

    @property
    def mismatches(self) -> int:
        return self.records - self.statuses["match"]

    def to_map(self) -> dict[str, Any]:
        n = max(self.records, 1)
        return {
            "records": self.records,
            "batches": self.batches,
            "mismatches": self.mismatches,
            "rate": self.mismatches / n,
            # no event in n trials: the one-sided 95% upper bound of the rate is about 3/n
            "rate_upper95": (-math.log(0.05) / n) if self.mismatches == 0 else None,
            "statuses": dict(self.statuses),
            "records_by_batch_size": dict(sorted(self.by_batch.items())),
            "not_match": self.bad[:20],
            "seconds": round(self.seconds, 1),
        }


def request_mix(rng: random.Random, vocab_limit: int, max_positions: int) -> tuple[list, int]:
    """One batch: (prompts of mixed lengths, decode steps)."""
    steps = rng.choice(DECODE_STEPS)
    lo, hi = PROMPT_TOKENS
    prompts = []
    for _ in range(rng.choice(BATCH_SIZES)):
        n = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        n = max(1, min(n, max_positions - steps - 1))
        prompts.append([rng.randrange(3, vocab_limit) for _ in range(n)])
    return prompts, steps


def serve_batch(
    engine: Any, prompts: list[list[int]], steps: int, node: str, seq: int
) -> list[Record]:
    """One agent batch, as `agents/worker.py` runs it: every request a row, all probed."""
    probes = ProbeSpec(tuple(default_layers(engine.num_layers)))
    t0 = time.time()
    res = engine.run_batch(
        BatchRequest(
            rows=[list(p) for p in prompts],
            decode_steps=steps,
            probe_rows=list(range(len(prompts))),
            probes=probes,
        )
    )
    t1 = time.time()
    # Every row a token-level client's request, listed in the batch's manifest as the agent does.
    rids = [f"{node}-{seq + i}" for i in range(len(prompts))]
    reqs = [token_request(r, p, steps + 1) for r, p in zip(rids, prompts, strict=True)]
    rows = manifest_of(list(zip(rids, reqs, strict=True)), len(prompts))
    return [
        dataclasses.replace(
            record_from_row(
                engine,
                res,
                i,
                ids,
                probes,
                node=node,
                seq=seq + i,
                request_id=rids[i],
                t_start=t0,
                t_end=t1,
            ),
            manifest=rows,
            request=reqs[i],
        )
        for i, ids in enumerate(prompts)
    ]


def commit_of(rec: Record) -> Commit:
    return Commit(
        node=rec.node,
        t=time.time(),
        seq=rec.seq,
        request_id=rec.request_id,
        record_digest=rec.digest(),
        chain=b"\0" * 32,  # chains are the intake's business, not the judge's
        setup=rec.setup.to_map(),
        model=rec.model,
        prompt_tokens=len(rec.prompt_ids),
        output_tokens=len(rec.output_ids),
        prefill_s=rec.timings.get("prefill_s", 0.0),
        decode_s=rec.timings.get("decode_s", 0.0),
        manifest=root(rec.manifest),
    )


def judge_honest(
    judge: Judge,
    provers: dict[str, Any],
    n_records: int,
    seed: int = 14,
    on_progress: Callable[[Tally], None] | None = None,
    deadline: float | None = None,
) -> Tally:
    """Serve honest batches on `provers` (node name -> engine, each serving its own setup) in
    turn until `n_records` records exist, judging each one as it is made; no new batch is
    served after `deadline` (time.monotonic())."""
    rng = random.Random(seed)
    tally = Tally()
    seqs = dict.fromkeys(provers, 0)
    names = sorted(provers)
    t0 = time.perf_counter()
    while tally.records < n_records:
        if deadline is not None and time.monotonic() > deadline:
            break
        node = names[tally.batches % len(names)]
        engine = provers[node]
        prompts, steps = request_mix(rng, engine.vocab_limit, engine.max_positions)
        prompts = prompts[: n_records - tally.records]
        recs = serve_batch(engine, prompts, steps, node, seqs[node])
        seqs[node] += len(recs)
        tally.batches += 1
        for rec in recs:
            v = judge.judge(commit_of(rec), rec.encode()).verdict
            tally.records += 1
            tally.statuses[v.status] += 1
            tally.by_batch[rec.setup.batch_size] += 1
            if v.status != "match":
                tally.bad.append(
                    {
                        "node": node,
                        "seq": rec.seq,
                        "status": v.status,
                        "batch_size": rec.setup.batch_size,
                        "slot": rec.setup.slot,
                        "prompt_tokens": len(rec.prompt_ids),
                        "row_lengths": rec.schedule.get("row_lengths"),
                        "first_diff": v.evidence.first_diff,
                        "reason": v.reason[:200],
                    }
                )
        tally.seconds = time.perf_counter() - t0
        if on_progress:
            on_progress(tally)
    return tally
