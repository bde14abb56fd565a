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

from fpmon.wire import SubmitReply, SubmitRequest, WireError, decode, encode

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
    socks = {}
    for ep in args.intake:
        s = ctx.socket(zmq.DEALER)
        s.linger = 0
        s.connect(ep)
        socks[ep] = s
    poller = zmq.Poller()
    for s in socks.values():
        poller.register(s, zmq.POLLIN)
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
                s.send_multipart(encode(req))
                in_flight[ep] = now
                next_at[ep] = now + 1.0 / args.rate
                sent += 1
        for s, _ in poller.poll(100):
            ep = next(e for e, x in socks.items() if x is s)
            try:
                reply = decode(s.recv_multipart(), expect=(SubmitReply.TOPIC,))
                ok += reply.status == "ok"  # type: ignore[attr-defined]
            except WireError:
                pass
            in_flight.pop(ep, None)
    print(f"loadgen: {sent} sent, {ok} served", file=sys.stderr)
    for s in socks.values():
        s.close(0)
    ctx.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
