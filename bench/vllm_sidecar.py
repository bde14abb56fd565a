"""Serving through the agent in sidecar mode vs straight to the same `vllm serve`.

One server with fpmon's plugin (start it with the command in docs/VLLM.md, "Attaching"), one
agent attached to it (`[vllm] server`). Each round sends the same requests, with the same
concurrency, once straight to the server's completions route and once through the agent
(which forwards them, collects probes and schedule windows, logs, commits and publishes);
the order alternates so drift on a shared machine hits both sides. Printed: tokens/s of each
side per round, the ratio of medians, the median of paired ratios, each side's median
request latency, and the agent process's own CPU time per request (what it costs beside the
server, less disturbed by other jobs than wall time).

    python bench/vllm_sidecar.py --server http://127.0.0.1:8000 [--model FOLDER]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="URL of a vllm serve with fpmon's plugin")
    ap.add_argument("--model", default="tiny", help="what the server loads, as [engine] model")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()

    from fpmon.agents.client import submit
    from fpmon.engines.vllm.attach import ServerTap
    from fpmon.testing.spawn import AgentProcess, write_config

    prompts = [f"request {i}: the inspector reads the node's commitments" for i in range(64)]
    tap = ServerTap(args.server, timeout_s=300)
    tap.connect()

    def direct(p: str) -> tuple[int, float]:
        t0 = time.perf_counter()
        c = tap.complete(p, args.max_tokens, uuid.uuid4().hex)
        return len(c.output_ids), time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        cfg = write_config(
            Path(tmp),
            "bench-sidecar",
            engine={"kind": "vllm", "model": args.model, "dtype": args.dtype},
            vllm={"server": args.server},
            batching={"max_batch": args.concurrency},
        )
        with AgentProcess(cfg).start(timeout_s=300) as agent:
            intake = agent.endpoints["intake"]

            def via_agent(p: str) -> tuple[int, float]:
                t0 = time.perf_counter()
                r = submit(intake, p, args.max_tokens, 300)
                assert r.status == "ok", r.reason
                return len(r.output_ids), time.perf_counter() - t0

            cpu0 = _cpu_s(agent.proc.pid)
            sides = {"direct": direct, "agent": via_agent}
            rate: dict[str, list[float]] = {k: [] for k in sides}
            lat: dict[str, list[float]] = {k: [] for k in sides}
            for rnd in range(args.rounds + 1):  # round 0 warms both paths up, not counted
                order = list(sides) if rnd % 2 else list(reversed(sides))
                for name in order:
                    batch = prompts[: args.requests]
                    t0 = time.perf_counter()
                    with ThreadPoolExecutor(args.concurrency) as pool:
                        got = list(pool.map(sides[name], batch))
                    wall = time.perf_counter() - t0
                    if rnd:
                        rate[name].append(sum(n for n, _ in got) / wall)
                        lat[name] += [s for _, s in got]
                if rnd:
                    print(
                        f"round {rnd}: direct {rate['direct'][-1]:7.1f} tok/s   "
                        f"agent {rate['agent'][-1]:7.1f} tok/s"
                    )
            st = agent.read_status()
            cpu = _cpu_s(agent.proc.pid) - cpu0
    med = {k: statistics.median(v) for k, v in rate.items()}
    paired = statistics.median(a / d for a, d in zip(rate["agent"], rate["direct"], strict=True))
    print(
        f"agent/direct throughput: ratio of medians {med['agent'] / med['direct']:.3f}, "
        f"median of paired rounds {paired:.3f}"
    )
    for k in sides:
        print(f"{k:7s} median request latency {statistics.median(lat[k]) * 1000:.0f} ms")
    print(f"agent CPU per request: {cpu / (args.requests * (args.rounds + 1)) * 1000:.1f} ms")
    # `unclaimed` counts the direct requests: the agent saw them in the plugin, did not record them.
    print(f"agent served {st['served']} requests; sidecar status {st.get('sidecar')}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
