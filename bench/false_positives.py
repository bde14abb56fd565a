"""False positives of the daemon's judge, counted at scale (issue 14, item 4).

Honest nodes on the CPU tiny model serve agent-style batches (mixed prompt lengths, batch sizes
1-8, decode lengths 1-24 tokens; `fpmon/replay/honest.py`) under three setups (float32/sdpa,
bfloat16/sdpa, bfloat16/eager); the daemon's `Judge` with real reference engines replays every
record. Prints the count, the mismatches (anything but `match`) and the rate; exit 1 if any.

    python bench/false_positives.py [--records 1000] [--seed 14] [--json out.json]
    python bench/false_positives.py --model random:qwen2.5-1.5b --device cuda --budget-s 450

On a GPU the provers and the judge's reference engines share the one device (same GPU model:
the judge's bit-exact path), and `--budget-s` stops serving new batches in time (the count is
what was judged by then).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from fpmon.engines.hf import HFEngine
from fpmon.replay.calibration import Calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.honest import judge_honest
from fpmon.replay.judge import Judge, JudgeOptions

SETUPS = {"honest-f32": ("float32", "sdpa"), "honest-bf16": ("bfloat16", "sdpa"),
          "honest-eager": ("bfloat16", "eager")}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (declared, replayed)")
    ap.add_argument("--model", default="tiny", help="tiny, random:qwen2.5-1.5b, ...")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    ap.add_argument("--budget-s", type=float, help="stop serving new batches after this")
    ap.add_argument("--json", help="write the tally here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    provers = {
        n: HFEngine(args.model, dtype=d, attn_impl=a, device=args.device)
        for n, (d, a) in SETUPS.items()
    }
    # The daemon's judge: its own reference engines (built per declared setup), attribution on.
    judge = Judge(
        EngineCache({args.model: args.model}, device=args.device), Calibration(), JudgeOptions()
    )

    def progress(t) -> None:
        if t.batches % 25 == 0:
            print(f"  {t.records} records, {t.mismatches} mismatches, {t.seconds:.0f} s",
                  file=sys.stderr, flush=True)  # fmt: skip

    deadline = time.monotonic() + args.budget_s if args.budget_s else None
    tally = judge_honest(judge, provers, args.records, args.seed, progress, deadline)
    out = tally.to_map()
    print(f"honest records judged: {out['records']} in {out['batches']} batches "
          f"({out['seconds']:.0f} s); by batch size {out['records_by_batch_size']}")  # fmt: skip
    bound = f" (95% upper bound {out['rate_upper95']:.2%})" if out["rate_upper95"] else ""
    print(f"mismatches: {out['mismatches']}  rate: {out['rate']:.4%}{bound}")
    for bad in out["not_match"]:
        print(f"  NOT MATCH {bad}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 1 if out["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
