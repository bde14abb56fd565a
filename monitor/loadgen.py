"""The demo's load generator: real generation requests to every agent's intake, at a steady rate.

Speaks the wire protocol directly (SubmitRequest over DEALER -> the agent's ROUTER), one
request in flight per agent, so a slow node is never buried under a queue.

    python -m fpmon.monitor.loadgen --intake tcp://127.0.0.1:7700 --intake ... --rate 0.5
"""

from __future__ import annotations

import argparse
import itertools
import signal
import sys
import time
import uuid

import zmq

from fpmon.session import Session
from fpmon.wire import SubmitReply, SubmitRequest

PROMPTS = (
    "The treaty requires",
    "Inspectors verified that the cluster",
    "A reproducible rounding pattern",
    "The datacenter declared batch size",
    "Every commitment is chained to",
    "Replay on reference hardware shows",
    "Attention kernels differ in",
    "The audit log records each request",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fpmon.monitor.loadgen")
    p.add_argument("--intake", action="append", required=True, help="agent intake endpoint")
    p.add_argument("--rate", type=float, default=0.5, help="requests per second per agent")
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument("--timeout", type=float, default=30.0, help="give up on a reply after this")
    args = p.parse_args(argv)
    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    ctx = zmq.Context()
    socks: dict[str, Session] = {}
    for ep in args.intake:
        socks[ep] = Session(ctx, zmq.DEALER, expect=(SubmitReply.TOPIC,))
        socks[ep].connect(ep)
    endpoint_of = {s.socket: ep for ep, s in socks.items()}
    poller = zmq.Poller()
    for s in socks.values():
        poller.register(s.socket, zmq.POLLIN)
    prompts = itertools.cycle(PROMPTS)
    in_flight: dict[str, float] = {}  # endpoint -> when sent
    next_at = dict.fromkeys(socks, time.monotonic())
    sent = ok = 0
    while not stop:
        now = time.monotonic()
        for ep, s in socks.items():
            if ep in in_flight and now - in_flight[ep] > args.timeout:
                del in_flight[ep]  # no answer (agent still loading, or gone): try again later
            if ep not in in_flight and now >= next_at[ep]:
                req = SubmitRequest(
                    node="loadgen", t=time.time(), request_id=uuid.uuid4().hex,
                    prompt=next(prompts), max_tokens=args.max_tokens,
                )  # fmt: skip
                s.send(req)
                in_flight[ep] = now
                next_at[ep] = now + 1.0 / args.rate
                sent += 1
        for sock, _ in poller.poll(100):
            ep = endpoint_of[sock]
            got = socks[ep].recv()
            if got is None:
                continue
            ok += isinstance(got.msg, SubmitReply) and got.msg.status == "ok"
            in_flight.pop(ep, None)  # a bad frame (counted by the session) ends the wait too
    print(f"loadgen: {sent} sent, {ok} served", file=sys.stderr)
    for s in socks.values():
        s.close()
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
