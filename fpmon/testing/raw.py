"""An agent watched from outside, with raw pyzmq and msgpack: for tests and benchmarks.

`RawSubscriber` hears an agent's `commit`, `head` and `telemetry`; `check_chain` rebuilds its
commitment chain with hashlib and `head_ok` checks a signed head rebuilt with struct; `raw_open`
asks for an opening and `raw_send` sends any frames to a ROUTER and waits for one reply. They
deliberately use neither fpmon.wire nor fpmon.chain, as an outside tool would not.
`submit_many` is ordinary client traffic: `n` requests at once, through the agent's client.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fpmon.agents.client import submit
from fpmon.wire import SubmitReply

GENESIS = b"\x00" * 32
# bf16 numerics do not depend on torch threads (measured); one thread keeps test agents
# from spinning against each other's OpenMP threads on a loaded machine.
ONE_THREAD = {"threads": 1}

Seen = dict[str, list[dict[str, Any]]]


class RawSubscriber:
    def __init__(self, endpoint: str, curve: dict[str, bytes] | None = None) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        for k, v in (curve or {}).items():
            setattr(self.sock, k, v)
        for topic in (b"commit", b"head", b"telemetry"):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)
        self.seen: Seen = {"commit": [], "head": [], "telemetry": []}

    def pump(self, until: Callable[[Seen], Any], timeout_s: float = 30.0) -> None:
        """Receive until `until(self.seen)` holds; AssertionError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while not until(self.seen):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"timed out; seen {[(k, len(v)) for k, v in self.seen.items()]}"
                )
            if self.sock.poll(int(min(left, 0.5) * 1000)):
                topic, payload = self.sock.recv_multipart()
                self.seen[topic.decode()].append(msgpack.unpackb(payload, raw=False))

    def close(self) -> None:
        self.sock.close()


def head_ok(h: dict[str, Any]) -> bool:
    """Whether head `h` carries a valid Ed25519 signature by its own `pubkey`."""
    node = h["node"].encode()
    msg = b"fpmon-head-v1\x00" + struct.pack(">H", len(node)) + node
    msg += struct.pack(">Q", h["seq"]) + h["chain"]
    try:
        Ed25519PublicKey.from_public_bytes(h["pubkey"]).verify(h["sig"], msg)
    except Exception:
        return False
    return True


def raw_open(
    endpoint: str, seq: int, curve: dict[str, bytes] | None = None, timeout_s: float = 10.0
) -> dict[str, Any] | None:
    """The agent's `opened` answer for `seq`, as a plain map; None if no answer in time."""
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    for k, v in (curve or {}).items():
        setattr(sock, k, v)
    sock.connect(endpoint)
    req = {"v": 1, "node": "verifier", "t": time.time(), "seq": seq, "nonce": b"n%d" % seq}
    sock.sndtimeo = int(timeout_s * 1000)  # no live pipe (refused handshake) blocks a DEALER
    try:
        sock.send_multipart([b"open", msgpack.packb(req, use_bin_type=True)])
        if not sock.poll(int(timeout_s * 1000)):
            return None
        topic, payload = sock.recv_multipart()
        if topic != b"opened":
            raise AssertionError(f"expected an 'opened' reply, got topic {topic!r}")
        reply: dict[str, Any] = msgpack.unpackb(payload, raw=False)
        return reply
    except zmq.Again:
        return None
    finally:
        sock.close()


def raw_send(endpoint: str, frames: list[bytes], wait_s: float = 5.0) -> list[bytes] | None:
    """Send `frames` as they are from a fresh DEALER; the reply's frames, or None in time."""
    sock: zmq.Socket[Any] = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    sock.send_multipart(frames)
    try:
        return sock.recv_multipart() if sock.poll(int(wait_s * 1000)) else None
    finally:
        sock.close()


def submit_many(endpoint: str, n: int, max_tokens: int = 4, **kw: Any) -> list[SubmitReply]:
    """`n` requests submitted at once, one thread each; their replies, in request order."""
    replies: list[Any] = [None] * n

    def one(i: int) -> None:
        replies[i] = submit(endpoint, f"request number {i} says hello", max_tokens, 60, **kw)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def check_chain(commits: list[dict[str, Any]], prev: bytes = GENESIS, first: int = 0) -> bytes:
    """Check `commits` are seqs `first`, `first`+1, ... each chaining on the one before (from
    `prev`); the last chain value. AssertionError naming the first gap or break."""
    for i, c in enumerate(sorted(commits, key=lambda c: c["seq"])):
        if c["seq"] != first + i:
            raise AssertionError("gap in commitments")
        prev = hashlib.sha256(prev + c["record_digest"]).digest()
        if c["chain"] != prev:
            raise AssertionError(f"chain broken at seq {c['seq']}")
    return prev
