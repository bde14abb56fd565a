"""Kill drill: SIGKILL the hub, an agent or the replay daemon at random under load, restart it,
then check nothing acknowledged was lost, nothing forked, no verdict was written twice and no
honest node got a chain_break; print recovery times per component.

Real processes on loopback: a hub, N agents (tiny model, CPU, one torch thread), the replay
daemon subscribed through the hub, and load to every agent. Exit 1 when an invariant fails,
listing the offending items. Code: fpmon/testing/drills/kill.py.

    python bench/drill_kill.py --kills 40 [--agents 3] [--seed 1] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

from fpmon.testing.drills.kill import DrillParams, print_report, run


def main(argv: list[str] | None = None) -> int:
    d = DrillParams()
    p = argparse.ArgumentParser(
        prog="python bench/drill_kill.py", description=__doc__.split("\n")[0]
    )
    p.add_argument("--kills", type=int, default=d.kills)
    p.add_argument("--agents", type=int, default=d.agents)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--rate", type=float, default=d.rate, help="requests/s per agent")
    p.add_argument("--in-flight", type=int, default=d.in_flight, help="per agent")
    p.add_argument("--max-tokens", type=int, default=d.max_tokens)
    p.add_argument("--sampling-rate", type=float, default=d.sampling_rate)
    p.add_argument("--min-down", type=float, default=d.restart_delay_s[0])
    p.add_argument("--max-down", type=float, default=d.restart_delay_s[1])
    p.add_argument("--min-between", type=float, default=d.between_s[0])
    p.add_argument("--max-between", type=float, default=d.between_s[1])
    p.add_argument("--only", choices=("hub", "agent", "replay"), help="kill only this kind")
    p.add_argument("--workdir", type=Path, help="keep configs, logs and stores here")
    a = p.parse_args(argv)
    weights = {"hub": 1.0, "agent": 1.0, "replay": 1.0}
    if a.only:
        weights = {a.only: 1.0}
    params = DrillParams(
        kills=a.kills,
        agents=a.agents,
        seed=a.seed,
        rate=a.rate,
        in_flight=a.in_flight,
        max_tokens=a.max_tokens,
        sampling_rate=a.sampling_rate,
        restart_delay_s=(a.min_down, a.max_down),
        between_s=(a.min_between, a.max_between),
        weights=weights,
        workdir=a.workdir,
    )
    t0 = time.monotonic()

    def say(s: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {s}", file=sys.stderr, flush=True)

    result = run(params, say)
    print_report(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
