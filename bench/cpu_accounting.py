"""CPU accounting's honest spread on this host: the demo fleet for real, each capacity window.

Runs `fpmon demo`'s fleet (hub, six agents on the tiny model, the load generator, the replay
daemon; monitor/demo.py) for `--duration` seconds, then reads every "capacity window" line of
the daemon's log (replay/accounting.py logs one per node and window, over or not) and prints,
per node, the engine's CPU-seconds observed against what its committed tokens explain
(metric `cpu`): windows, ratio min / median / max, windows over the threshold. The honest
nodes' spread is where `CPU_RATIO` and `CPU_FLOOR` in replay/accounting.py come from.

    python bench/cpu_accounting.py [--duration 240] [--hidden-duty 0.5] [--json out.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fpmon.monitor.demo import NODES, Fleet


def windows(log: Path) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for line in log.read_text(errors="replace").splitlines():
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if d.get("msg") == "capacity window" and "cpu" in d.get("observed", {}):
            out.setdefault(d["node"], []).append(d)
    return out


def spread(rows: list[dict[str, Any]]) -> dict[str, Any]:
    ratios = [r["ratios"]["cpu"] for r in rows if r["ratios"].get("cpu") is not None]
    obs = [r["observed"]["cpu"] / r["window_s"] for r in rows]
    return {
        "windows": len(rows),
        "ratio_min": min(ratios, default=None),
        "ratio_median": statistics.median(ratios) if ratios else None,
        "ratio_max": max(ratios, default=None),
        "cores_min": round(min(obs, default=0.0), 3),  # observed CPU-s per wall second
        "cores_max": round(max(obs, default=0.0), 3),
        "no_tokens": sum(1 for r in rows if r["tokens"] == 0),
        "over": sum(1 for r in rows if "cpu" in r["over"]),
        "refused": sum(sum(r["refused"].values()) for r in rows[-1:]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=240.0)
    ap.add_argument("--hidden-duty", type=float, default=None, help="node-hidden's side work")
    ap.add_argument("--workdir", help="keep the fleet's files here (default: a temp folder)")
    ap.add_argument("--json", help="write the per-node spread here")
    args = ap.parse_args()
    nodes = list(NODES)
    if args.hidden_duty is not None:
        nodes = [
            dataclasses.replace(n, redteam={"side_work_duty": args.hidden_duty})
            if n.expect == "hidden_work"
            else n
            for n in nodes
        ]
    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="fpmon-cpuacct-")
    workdir = Path(args.workdir or tmp.name)  # type: ignore[union-attr]
    workdir.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(workdir, nodes=nodes)
    fleet.start()
    try:
        end = time.monotonic() + args.duration
        while time.monotonic() < end:
            for p in fleet.problems():
                print(p, file=sys.stderr)
            time.sleep(1.0)
    finally:
        fleet.stop()
    found = windows(workdir / "logs" / "replay.log")
    result = {
        "duration_s": args.duration,
        "nodes": {n.name: {"expect": n.expect, **spread(found.get(n.name, []))} for n in nodes},
    }
    print(f"{'node':<13} {'expect':<12} {'win':>3} {'ratio min/med/max':>20} "
          f"{'cores':>12} {'0-tok':>5} {'over':>4}")  # fmt: skip
    for name, s in result["nodes"].items():
        r = (
            f"{s['ratio_min']:.2f}/{s['ratio_median']:.2f}/{s['ratio_max']:.2f}"
            if s["ratio_min"] is not None
            else "not judged"
        )
        print(
            f"{name:<13} {s['expect']:<12} {s['windows']:>3} {r:>20} "
            f"{s['cores_min']:.3f}-{s['cores_max']:.3f} {s['no_tokens']:>5} {s['over']:>4}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
