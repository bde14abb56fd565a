"""Durable log rate: records/s appended to the SQLite WAL log, 4 KiB of probes each.

Each record is a real `Record` (4 KiB key probe) encoded canonically, hashed and appended,
side by side under the log's durability settings: synchronous=NORMAL (WAL: survives kill -9
and any process crash, the agent's failure model) and FULL (also power loss: one fsync per
transaction, so its rate is the disk's fsync rate times the records per transaction). The
agent appends one transaction per engine batch. Prints rates and ratios to the 2,000/s goal.

    python bench/agent_store.py [--n 3000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from fpmon.agents.store import RecordLog
from fpmon.canonical import digest
from fpmon.records import Record
from fpmon.setups import Setup
from fpmon.tensors import Blob

GOAL = 2_000


POOL = os.urandom(1 << 20)


def make_record(seq: int) -> Record:
    off = (seq * 4099) % (len(POOL) - 4096)  # distinct bytes per record, no RNG in the loop
    probe = Blob("bfloat16", (16, 128), POOL[off : off + 4096])
    return Record(
        node="bench",
        seq=seq,
        request_id=f"r{seq}",
        t_start=0.0,
        t_end=1.0,
        model="tiny",
        weights_digest="0" * 64,
        setup=Setup(),
        prompt_ids=list(range(12)),
        output_ids=list(range(16)),
        schedule={"kind": "static", "row_lengths": [12]},
        probes={"keys.L0": probe},
        layers=[0],
        timings={"prefill_s": 0.01, "decode_s": 0.1},
    )


def run(path: Path, n: int, per_tx: int, sync: str) -> float:
    log = RecordLog(path, node="bench", synchronous=sync)
    t0 = time.perf_counter()
    for start in range(0, n, per_tx):
        items = []
        for seq in range(start, min(start + per_tx, n)):
            data = make_record(seq).encode()
            items.append((f"r{seq}", digest(data), data, 16))
        log.append(items)
    rate = n / (time.perf_counter() - t0)
    assert log.verify_chain() == -1 and log.head_seq == n - 1
    log.close()
    return rate


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--dir", default=None, help="where the log goes (default: a temp dir)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as d:
        size = len(make_record(0).encode())
        print(f"record size {size} bytes (4096 bytes of probe)")
        rates = {}
        for per_tx, sync in ((1, "NORMAL"), (8, "NORMAL"), (1, "FULL"), (8, "FULL"), (64, "FULL")):
            r = run(Path(d) / f"log{per_tx}{sync}.sqlite", args.n, per_tx, sync)
            rates[per_tx, sync] = r
            print(
                f"synchronous={sync:<6} {per_tx:>2} record(s)/transaction: {r:8,.0f} records/s"
                f"  (ratio to {GOAL:,}/s: {r / GOAL:.2f})"
            )
    return 0 if rates[1, "NORMAL"] >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
