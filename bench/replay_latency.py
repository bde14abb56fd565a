"""Commit-to-verdict latency on a local CPU fleet: p50 target <= 2 s (issue 5).

Three prover nodes (real engines, real sockets) serve requests back to back; the daemon (its
own reference engines, its own thread) samples a quarter of them, opens, replays and judges.
Latency = verdict time - commit time, for every sampled record, read from the verdict store.

    python bench/replay_latency.py [requests_per_node] [rate]
    python bench/replay_latency.py --store DEMO_WORKDIR/replay.sqlite   # any daemon's store
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from fpmon.engines.hf import HFEngine
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.fleet import (
    ProverNode,
    daemon_doc,
    read_verdicts,
    wait_subscribed,
    wait_verdicts,
)

TARGET_P50 = 2.0


def report(lat: list[float], what: str) -> int:
    lat = sorted(lat)
    p50 = statistics.median(lat)
    p90 = lat[int(0.9 * (len(lat) - 1))]
    ok = "PASS" if p50 <= TARGET_P50 else "FAIL"
    print(
        f"commit-to-verdict ({what}): p50 {p50:.3f} s, p90 {p90:.3f} s, max {lat[-1]:.3f} s; "
        f"target p50 <= {TARGET_P50} s ({ok}; ratio {p50 / TARGET_P50:.2f})"
    )
    return 0 if p50 <= TARGET_P50 else 1


def from_store(path: str) -> int:
    """Latency of every judged sampled record in an existing store (e.g. the demo's)."""
    vs = [
        v
        for v in read_verdicts(path)
        if "commit_t" in v["evidence"] and v["status"] in ("match", "within_noise", "mismatch")
    ]
    if not vs:
        print(f"{path}: no judged verdicts with a commit time")
        return 1
    by: dict[str, int] = {}
    for v in vs:
        by[v["status"]] = by.get(v["status"], 0) + 1
    print(f"{path}: {len(vs)} judged verdicts {by}")
    return report([v["t"] - v["evidence"]["commit_t"] for v in vs], "from the store")


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--store":
        return from_store(sys.argv[2])
    per_node = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 0.25
    tmp = Path(tempfile.mkdtemp(prefix="fpmon-latency-"))
    nodes = [ProverNode(f"n{i}") for i in range(3)]
    engine = HFEngine("tiny", dtype="bfloat16", attn_impl="sdpa")
    cfg = config.parse(tmp / "replay.toml", daemon_doc(tmp, nodes, sampling={"rate": rate}))
    daemon = ReplayDaemon(cfg)  # its own reference engines (hf_factory)
    daemon.start()
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    wait_subscribed(nodes, daemon)
    sampled = 0
    t0 = time.perf_counter()
    for i in range(per_node):
        for n in nodes:
            c = n.make(engine, engine.encode(f"{n.name} request {i}: hello fleet"))
            n.publish(c)
            sampled += daemon.sampler.sampled(n.name, c.seq)
    served = time.perf_counter() - t0
    verdicts = wait_verdicts(cfg.replay.store, sampled, timeout=300)
    daemon.stop()
    thread.join(timeout=60)
    for n in nodes:
        n.close()
    lat = [v["t"] - commit_t(v, nodes) for v in read_verdicts(cfg.replay.store)]
    statuses = {v["status"] for v in verdicts}
    print(
        f"fleet: 3 nodes x {per_node} requests in {served:.1f} s, sampling rate {rate}, "
        f"{len(lat)} sampled and judged ({statuses})"
    )
    return report(lat, "local fleet")


def commit_t(v: dict, nodes: list[ProverNode]) -> float:
    """The record's t_end, i.e. when the prover committed it (records are kept by the node)."""
    from fpmon.records import Record

    node = next(n for n in nodes if n.name == v["node"])
    return Record.decode(node.records[v["seq"]]).t_end


if __name__ == "__main__":
    sys.exit(main())
