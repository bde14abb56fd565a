"""Publishing rate: commitments/s from one agent publisher on one core, heads signed each second.

The publisher (pinned to one core) builds each Commit, encodes it and sends it on a real PUB
bound to loopback; a subscriber in another process (the other core) counts what arrives, so
the rate is of frames actually delivered. Prints the rate and its ratio to the 20,000/s goal.

    python bench/agent_publish.py [--n 200000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon.agents.heads import HeadSigner
from fpmon.agents.publisher import Publisher
from fpmon.chain import GENESIS, next_chain
from fpmon.setups import Setup
from fpmon.wire import Commit

GOAL = 20_000

SUBSCRIBER = r"""
import sys, time, zmq
ctx = zmq.Context(); s = ctx.socket(zmq.SUB); s.rcvhwm = 0
s.setsockopt(zmq.SUBSCRIBE, b"commit"); s.setsockopt(zmq.SUBSCRIBE, b"head")
s.connect(sys.argv[1]); n = int(sys.argv[2]); got = heads = 0
print("ready", flush=True)
while got < n:
    topic, _ = s.recv_multipart()
    if topic == b"commit": got += 1
    else: heads += 1
print(got, heads, flush=True)
"""


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200_000)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})  # the publisher gets one core
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.sndhwm = 0  # count every frame: nothing dropped at the high-water mark
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER, f"tcp://127.0.0.1:{port}", str(args.n)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sub.stdout.readline().strip() == "ready"
    time.sleep(0.5)  # slow joiner
    signer = HeadSigner(Ed25519PrivateKey.generate(), "bench-node")
    p = Publisher(
        pub, signer, head_seq=-1, head_chain=GENESIS, head_every_s=1.0, head_every_n=10**9
    )
    setup = Setup().to_map()
    chain = GENESIS
    t0 = time.perf_counter()
    c0 = time.process_time()
    for seq in range(args.n):
        digest = hashlib.sha256(seq.to_bytes(8, "big")).digest()
        chain = next_chain(chain, digest)
        p.commit(
            Commit(
                node="bench-node",
                t=time.time(),
                seq=seq,
                request_id=f"r{seq}",
                record_digest=digest,
                chain=chain,
                setup=setup,
                model="tiny",
                prompt_tokens=12,
                output_tokens=32,
                prefill_s=0.01,
                decode_s=0.1,
            )
        )
        if seq % 256 == 0:
            p.tick(time.monotonic())  # what the publisher loop does between queue reads
    p.head()
    send_s = time.perf_counter() - t0
    cpu_s = time.process_time() - c0
    got, heads = (int(x) for x in sub.stdout.readline().split())
    wall = time.perf_counter() - t0
    sub.wait()
    rate = got / wall
    print(f"commitments published {args.n}, delivered {got}, signed heads {heads}")
    print(f"publisher: {send_s:.2f} s wall, {cpu_s:.2f} s CPU on one core")
    print(f"delivered rate: {rate:,.0f} commitments/s (end to end, subscriber included)")
    print(f"ratio to goal {GOAL:,}/s: {rate / GOAL:.2f}")
    pub.close(0)
    ctx.term()
    return 0 if rate >= GOAL else 1


if __name__ == "__main__":
    sys.exit(main())
