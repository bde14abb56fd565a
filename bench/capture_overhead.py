"""What probing costs: the same batches with probes and without, alternating, in one run.

    python bench/capture_overhead.py                          # CPU, tiny model
    python bench/capture_overhead.py --model random:qwen2.5-1.5b --device cuda --batch 1,8

Prints, per batch size, the median time per request with and without probes and their ratio
(target: <= 1.03 on a GPU, <= 1.10 on the CPU with the tiny model). Alternating the two
(ABBA order) inside one process keeps clock, thermal and cache drift out of the ratio.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fpmon.engines.base import BatchRequest, ProbeSpec, default_layers
from fpmon.engines.batching import filler_ids
from fpmon.engines.hf import HFEngine


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes")
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10, help="pairs of timed runs per batch size")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()

    engine = HFEngine(args.model, device=args.device)
    probes = ProbeSpec(tuple(default_layers(engine.num_layers)))
    out = {"model": args.model, "device": args.device, "setup": engine.setup.summary(), "by": {}}
    for bs in (int(x) for x in args.batch.split(",")):
        rows = [filler_ids(args.prompt_len, r, engine.vocab_limit) for r in range(bs)]

        def once(with_probes: bool, rows: list[list[int]] = rows, bs: int = bs) -> float:
            req = BatchRequest(
                rows=rows,
                decode_steps=args.decode_steps,
                probe_rows=list(range(bs)) if with_probes else [],
                probes=probes if with_probes else None,
            )
            t = time.perf_counter()
            engine.run_batch(req)  # synchronises the device before returning its timings
            return time.perf_counter() - t

        once(True)
        once(False)  # warm-up of both paths
        on, off = [], []
        for i in range(args.repeats):
            order = (True, False) if i % 2 == 0 else (False, True)
            for flag in order:
                (on if flag else off).append(once(flag))
        m_on, m_off = statistics.median(on), statistics.median(off)
        out["by"][f"bs{bs}"] = {
            "with_probes_s": m_on,
            "without_s": m_off,
            "ratio": m_on / m_off,
            "repeats": args.repeats,
        }
        print(
            f"batch {bs:>2}: with probes {m_on * 1e3:8.1f} ms, without {m_off * 1e3:8.1f} ms, "
            f"ratio {m_on / m_off:.3f}  ({args.repeats} alternating pairs, "
            f"{args.decode_steps} decode steps, {args.device})"
        )
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
