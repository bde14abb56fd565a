"""Socket fuzz: mutated and hostile frames at every externally reachable socket of a real hub,
agent and replay daemon; then every process must be alive and still answer a valid request.

Targets: the hub's XSUB (as a publisher) and XPUB (as a subscriber), the daemon's SUB input
(through the hub) and state ROUTER, the agent's intake and openings ROUTERs, and raw TCP to
all of them. Prints frames/s per target, RSS before/after, reject counters and tracebacks.
Exit 1 on a crash or a process that stops answering. Code: fpmon/testing/drills/fuzz.py.

    python bench/fuzz_sockets.py --frames 1000000          # split across the targets
    python bench/fuzz_sockets.py --per-socket 100000 [--targets agent-intake,hub-xsub]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout, not an install

from fpmon.testing.drills.fuzz import TARGETS, FuzzParams, print_report, run, to_json


def main(argv: list[str] | None = None) -> int:
    d = FuzzParams()
    p = argparse.ArgumentParser(
        prog="python bench/fuzz_sockets.py", description=__doc__.split("\n")[0]
    )
    p.add_argument("--frames", type=int, default=d.frames, help="in all, split across targets")
    p.add_argument("--per-socket", type=int, default=0, help="this many at each target instead")
    p.add_argument("--targets", default=",".join(TARGETS), help="comma-separated subset")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--churn", type=int, default=d.churn, help="frames per connection")
    p.add_argument("--huge-every", type=int, default=d.huge_every, help="one 5 MiB frame per N")
    p.add_argument("--workdir", type=Path, help="keep configs and logs here")
    p.add_argument("--json", type=Path, help="also write the figures here")
    a = p.parse_args(argv)
    targets = tuple(t for t in a.targets.split(",") if t)
    unknown = [t for t in targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown targets {unknown}; use {', '.join(TARGETS)}")
    params = FuzzParams(
        frames=a.frames,
        per_socket=a.per_socket,
        targets=targets,
        seed=a.seed,
        churn=a.churn,
        huge_every=a.huge_every,
        workdir=a.workdir,
    )
    t0 = time.monotonic()

    def say(s: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f} s] {s}", file=sys.stderr, flush=True)

    result = run(params, say)
    print_report(result)
    if a.json:
        a.json.write_text(to_json(result))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
