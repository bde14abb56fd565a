"""The honest spread of verifier-timed challenges, and how far hidden work moves it.

For each case: one real agent (tiny model, CPU, one torch thread, batches up to 4), ordinary
client load at `rate` requests/s (fpmon.testing.load), and a replay daemon challenging it every
`--interval` s on average. Every judged challenge is collected: latency (the verifier's
stopwatch), the reference replay, the committed work it queued behind, the ratio
latency/reference and the margin to the band's limit. Prints one line per case and, with --out,
every point as JSON.

    PYTHONPATH=. python bench/challenge_spread.py --cases 0:0 1:0 3:0 1:0.25 1:0.5 --duration 120
    # on a GPU host: the agent on one GPU, the verifier's reference on another
    PYTHONPATH=. python bench/challenge_spread.py --agent-device cuda:0 --replay-device cuda:1 \
        --model random:qwen2.5-1.5b --cases 0:0 2:0 8:0 2:0.05

A case is RATE:HIDDEN_S (`[redteam] hidden_work_s` on the agent: covert forward passes after
each batch, outside the committed times).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def quantile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(int(q * len(xs)), len(xs) - 1)] if xs else float("nan")


def run_case(rate: float, hidden: float, args: argparse.Namespace) -> dict[str, Any]:
    from fpmon.engines.hf import HFEngine
    from fpmon.testing.challenge_fleet import (
        RunningDaemon,
        agent_config,
        daemon_doc,
        wait_heard,
    )
    from fpmon.testing.load import ClientLoad
    from fpmon.testing.spawn import AgentProcess

    tmp = Path(tempfile.mkdtemp(prefix="challenge-spread-"))
    cpu = args.agent_device == "cpu"
    engine = HFEngine(args.model, dtype="bfloat16", attn_impl="sdpa", device=args.replay_device)
    kw: dict[str, Any] = {
        "engine": {"model": args.model, "device": args.agent_device, "threads": 1 if cpu else 0}
    }
    if hidden:
        kw["redteam"] = {"enabled": True, "hidden_work_s": hidden}
    agent = AgentProcess(agent_config(tmp / "agent", "node", **kw))
    points: dict[int, Any] = {}
    with agent:
        doc = daemon_doc(
            tmp,
            [agent.node_entry(intake=True)],
            args.interval,
            args.tokens,
            replay={"device": args.replay_device, "threads": 1 if cpu else 0},
            models={args.model: args.model},
        )
        with RunningDaemon(tmp, doc, lambda spec, setup, dev: engine) as d:
            assert d.challenges is not None
            wait_heard(d, ["node"])
            load = ClientLoad(agent.endpoints["intake"], rate, args.tokens) if rate else None
            if load:
                load.start()
            end = time.monotonic() + args.duration
            while time.monotonic() < end:
                time.sleep(1.0)
                s = d.challenges.summary("node")
                for p in s.recent if s else []:
                    points[p.seq] = p
            if load:
                load.stop()
                load.join(5)
            counts = dict(d.challenges.nodes["node"].counts)
            alerts = [
                (a.kind, a.message[:200])
                for a in d.store.alerts(limit=100)
                if a.kind in ("suspected_hidden_work", "challenge_failed")
            ]
    pts = list(points.values())
    ratios = [p.ratio for p in pts]
    band = d.cfg.challenges
    margins = [
        p.latency_s - (band.max_ratio * (p.reference_s + p.queue_s) + band.slack_s) for p in pts
    ]
    # the least slack that would have kept every point of this case inside the band, per ratio
    slack_needed = {
        r: max((p.latency_s - r * (p.reference_s + p.queue_s) for p in pts), default=None)
        for r in (1.5, 2.0, 3.0, 4.0)
    }
    loaded = [p.latency_s / (p.reference_s + p.queue_s) for p in pts]
    return {
        "rate": rate,
        "hidden_s": hidden,
        "judged": len(pts),
        "over": sum(p.over for p in pts),
        "ratio_p50": statistics.median(ratios) if ratios else None,
        "ratio_p90": quantile(ratios, 0.9),
        "ratio_max": max(ratios, default=None),
        "loaded_p50": statistics.median(loaded) if loaded else None,
        "loaded_max": max(loaded, default=None),
        "latency_p50": statistics.median([p.latency_s for p in pts]) if pts else None,
        "reference_p50": statistics.median([p.reference_s for p in pts]) if pts else None,
        "queue_max": max((p.queue_s for p in pts), default=None),
        "margin_max_s": max(margins, default=None),
        "slack_needed": slack_needed,
        "load_sent": load.sent if load else 0,
        "load_refused": load.refused if load else 0,
        "load_latency_p50": statistics.median(load.latencies) if load and load.latencies else None,
        "counts": counts,
        "alerts": alerts,
        "points": [
            {
                "seq": p.seq,
                "latency_s": p.latency_s,
                "reference_s": p.reference_s,
                "queue_s": p.queue_s,
                "ratio": p.ratio,
                "over": p.over,
            }
            for p in sorted(pts, key=lambda p: p.seq)
        ],
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", nargs="+", default=["0:0", "1:0", "3:0"], help="RATE:HIDDEN_S")
    p.add_argument("--duration", type=float, default=120.0)
    p.add_argument("--interval", type=float, default=2.0, help="mean challenge interval, s")
    p.add_argument("--tokens", type=int, default=16)
    p.add_argument("--model", default="tiny")
    p.add_argument("--agent-device", default="cpu")
    p.add_argument("--replay-device", default="cpu")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    results = []
    for case in args.cases:
        rate, hidden = (float(x) for x in case.split(":"))
        r = run_case(rate, hidden, args)
        results.append(r)

        def f(x: Any) -> str:
            return "-" if x is None else f"{x:.2f}"

        print(
            f"rate {rate:g}/s hidden {hidden:g} s: {r['judged']} judged, {r['over']} over; "
            f"ratio p50 {f(r['ratio_p50'])} p90 {f(r['ratio_p90'])} max {f(r['ratio_max'])}; "
            f"latency/(ref+queue) p50 {f(r['loaded_p50'])} max {f(r['loaded_max'])}; "
            f"latency p50 {f(r['latency_p50'])} s, reference p50 {f(r['reference_p50'])} s, "
            f"queue max {f(r['queue_max'])} s; worst margin to the limit "
            f"{f(r['margin_max_s'])} s; slack needed at ratio 1.5/2/3/4: "
            f"{'/'.join(f(x) for x in r['slack_needed'].values())} s; "
            f"load {r['load_sent']} sent, {r['load_refused']} refused; "
            f"outcomes {r['counts']}; alerts {[a[0] for a in r['alerts']]}",
            flush=True,
        )
        if args.out:
            args.out.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
