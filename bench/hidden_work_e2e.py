"""Hidden work end to end: real agents, the real replay daemon, side work on the node's GPU.

Two `fpmon agent` processes serve batch-1 requests back to back (a load thread each): `node`
on `--node-device`, `control` on `--control-device`; the replay daemon judges both with its
reference on `--reference` (GPM around its replays where that is a GPU), accounting their
telemetry over `--window-s` windows. After the daemon has judged a few records of each node:
`--quiet-s` of honest serving, then `--hidden-s` with a side process of bf16 matmuls at
`--duty` on the node's device (`fpmon.sidework`). Prints and writes (`--out`) every alert
with its phase, the nodes' capacity summaries and the undeclared_capacity details.
Expected: no alert in the quiet phase or for the control; `foreign_process` and
`undeclared_capacity` for the node in the hidden phase.

    PYTHONPATH=. python bench/hidden_work_e2e.py --out /tmp/e2e            # two GPUs
    PYTHONPATH=. python bench/hidden_work_e2e.py --dry-run --out /tmp/e2e  # CPU wiring check
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from fpmon.agents.client import submit
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.sidework import SideProcess
from fpmon.testing.spawn import AgentProcess, write_config


class NoSide:
    info = "dry run: no side work"

    def __enter__(self) -> NoSide:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="random:qwen2.5-1.5b")
    ap.add_argument("--node-device", default="cuda:0")
    ap.add_argument("--control-device", default="cuda:1")
    ap.add_argument("--reference", default="cuda:1")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rate", type=float, default=0.2, help="sampling rate")
    ap.add_argument("--window-s", type=float, default=15.0)
    ap.add_argument("--quiet-s", type=float, default=45.0)
    ap.add_argument("--hidden-s", type=float, default=45.0)
    ap.add_argument("--duty", default="0.1")
    ap.add_argument("--out", type=Path, default=Path("hidden-e2e"))
    ap.add_argument("--dry-run", action="store_true")
    args = ap.parse_args()
    if args.dry_run:
        args.model, args.node_device, args.control_device, args.reference = ("tiny",) + ("cpu",) * 3
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="fpmon-e2e-"))
    common = {
        "batching": {"max_batch": 1, "max_wait_ms": 2},
        "security": {"curve": False},
        "publish": {"head_every_s": 0.5},
    }
    agents = {
        name: AgentProcess(
            write_config(
                tmp / name,
                name,
                engine={"model": args.model, "dtype": "bfloat16", "device": dev},
                **common,
            )
        )
        for name, dev in (("node", args.node_device), ("control", args.control_device))
    }
    errors: list[BaseException] = []

    def start(a: AgentProcess) -> None:
        try:
            a.start(timeout_s=240)
        except BaseException as e:
            errors.append(e)

    ts = [threading.Thread(target=start, args=(a,)) for a in agents.values()]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise SystemExit(f"agents did not start: {errors}")
    t_start = time.time()
    try:
        key = tmp / "sampling.key"
        key.write_text("22" * 32)
        key.chmod(0o600)
        nodes = [a.node_entry() for a in agents.values()]
        doc = {
            "replay": {
                "store": str(tmp / "replay.sqlite"),
                "publish": "tcp://127.0.0.1:0",
                "state": "tcp://127.0.0.1:0",
                "device": args.reference,
            },
            "models": {args.model: args.model},
            "sampling": {"key_file": str(key), "rate": args.rate},
            "attribution": {"enabled": False},
            "timing": {"capacity_window_s": args.window_s},
            "node": nodes,
        }
        cfg = config.parse(tmp / "replay.toml", doc)
        daemon = ReplayDaemon(cfg)
        daemon.start()
        dt = threading.Thread(target=daemon.run, daemon=True)
        dt.start()
        stop = threading.Event()
        served = dict.fromkeys(agents, 0)

        def load(name: str, a: AgentProcess) -> None:
            i = 0
            while not stop.is_set():
                r = submit(
                    a.endpoints["intake"], f"request {i} of {name}: tell me", args.tokens, 60
                )
                served[name] += r.status == "ok"
                i += 1

        loads = [threading.Thread(target=load, args=kv, daemon=True) for kv in agents.items()]
        for t in loads:
            t.start()
        # Warm up: the daemon loads its reference and judges a few records of each node.
        deadline = time.time() + 240
        while time.time() < deadline:
            counts = daemon.store.verdict_counts()
            if all(sum(counts.get(n, {}).values()) >= 3 for n in agents):
                break
            time.sleep(1)
        phases: list[tuple[str, float, float, str]] = []
        t0 = time.time()
        time.sleep(args.quiet_s)
        phases.append(("quiet", t0, time.time(), ""))
        side = NoSide() if args.dry_run else SideProcess("compute", args.duty, args.node_device)
        with side:
            t0 = time.time()
            time.sleep(args.hidden_s)
            phases.append((f"compute-{args.duty}", t0, time.time(), side.info))
        stop.set()
        time.sleep(1.5)  # one more tick
        alerts = [a.to_map() for a in daemon.store.alerts(since_sid=0, limit=10_000)]
        summary = {n: s.capacity for n, s in daemon.summary().items()}
        verdicts = daemon.store.verdict_counts()
        meter = daemon.judge.meter.status if daemon.judge.meter else ""
        daemon.stop()
        dt.join(timeout=60)
    finally:
        for a in agents.values():
            a.stop()

    def phase_of(t: float) -> str:
        for name, a, b, _ in phases:
            if a <= t < b + args.window_s:  # a window ending just after a phase belongs to it
                return name
        return "warm-up" if t < phases[0][1] else "after"

    rows = [
        {
            "phase": phase_of(a["t"]),
            "node": a["node"],
            "kind": a["kind"],
            "t_rel": round(a["t"] - t_start, 1),
            "message": a["message"],
            "details": a["details"],
        }
        for a in alerts
    ]
    out = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "phases": phases,
        "served": served,
        "verdicts": verdicts,
        "reference_meter": meter,
        "capacity": summary,
        "alerts": rows,
    }
    (args.out / "e2e.json").write_text(json.dumps(out, indent=1, default=str))
    print(f"served {served}; verdicts {verdicts}; reference meter: {meter}")
    print("phases:", [(p[0], round(p[2] - p[1]), p[3]) for p in phases])
    for n, c in summary.items():
        print(f"capacity {n}: {c}")
    for r in rows:
        head = f"[{r['phase']:>12}] t+{r['t_rel']:6.1f}s {r['node']:8} {r['kind']:20}"
        print(f"{head} {r['message'][:400]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
