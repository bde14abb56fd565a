"""Ingest rate: commitments/s through decode + attribution + chain check + sampling, one core.

Target (issue 5): >= 50,000 commitments/s. Prints the rate against the target, plus the
decoder's rate alone side by side (the share of ingest that is decoding).

    python bench/replay_ingest.py [N]
"""

from __future__ import annotations

import os
import sys
import time

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fpmon.chain import GENESIS, next_chain, sign_head
from fpmon.replay.intake import Intake
from fpmon.replay.sampling import Sampler
from fpmon.setups import Setup
from fpmon.wire import Commit, Head, Limits, decode, encode

TARGET = 50_000.0


def frames_for(node: str, n: int, key: Ed25519PrivateKey) -> list[list[bytes]]:
    setup = Setup(dtype="float32", batch_size=4, slot=1).to_map()
    chain = GENESIS
    out = []
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    for seq in range(n):
        digest = os.urandom(32)
        chain = next_chain(chain, digest)
        c = Commit(
            node=node,
            t=time.time(),
            seq=seq,
            request_id=f"req-{seq}",
            record_digest=digest,
            chain=chain,
            setup=setup,
            model="tiny",
            prompt_tokens=12,
            output_tokens=17,
            prefill_s=0.01,
            decode_s=0.1,
            manifest=digest,  # a batch's row-manifest root (32 bytes), as agents send it
        )
        out.append(encode(c))
        if seq % 1000 == 999:  # a signed head every 1000 commits (about 1 s at 1k req/s)
            h = Head(
                node=node,
                t=time.time(),
                seq=seq,
                chain=chain,
                sig=sign_head(key, node, seq, chain),
                pubkey=pub,
            )
            out.append(encode(h))
    return out


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    frames = frames_for("n1", n, key)
    intake = Intake({"n1": pub}, Sampler(os.urandom(32), 0.05, 0.5), Limits())
    # CPU time of this (single-threaded) loop: the rate one core sustains, whatever else the
    # machine is running; wall time is printed beside it.
    c0, t0 = time.process_time(), time.perf_counter()
    for f in frames:
        intake.handle(f, "n1")
    dt, wall = time.process_time() - c0, time.perf_counter() - t0
    breaks, samples, _ = intake.drain()
    assert not breaks, breaks[:3]
    rate = n / dt
    m = min(n, 20_000)
    c0 = time.process_time()
    for f in frames[:m]:
        decode(f, Limits(), ("commit", "head", "telemetry"))
    generic = m / (time.process_time() - c0)
    # The untyped floor: msgpack to dicts, no checks at all. The typed, bounded decode is
    # what the daemon runs; the ratio says what the bounds cost.
    c0 = time.process_time()
    for f in frames[:m]:
        msgpack.unpackb(f[1], raw=False)
    untyped = m / (time.process_time() - c0)
    verdict = "PASS" if rate >= TARGET else "FAIL"
    print(
        f"ingest: {n} commits ({n // 1000} signed heads) in {dt:.3f} CPU s = {rate:,.0f}/s "
        f"({n / wall:,.0f}/s wall); "
        f"target {TARGET:,.0f}/s; ratio {rate / TARGET:.2f} ({verdict}); sampled {len(samples)}"
    )
    print(
        f"fpmon.wire.decode alone (typed, bounded): {generic:,.0f}/s; untyped msgpack.unpackb: "
        f"{untyped:,.0f}/s; typed/untyped {generic / untyped:.2f}; whole ingest runs at "
        f"{rate / generic:.2f} of decode alone"
    )
    return 0 if rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
