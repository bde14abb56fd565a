"""The daemon's `state` ROUTER: StateRequest -> StateReply for monitors, at a bounded cost.

One 42-byte request buys a reply of hundreds of kilobytes (node summaries, 200 verdicts, 100
alerts) built from the store on the daemon's one loop thread, so who may ask and how often
matter:
- with Curve configured the ROUTER is a Curve server admitting only the monitor keys in
  `state_clients_dir` (ZAP); without it anyone who reaches the endpoint may ask (loopback);
- each peer (its Curve key, else its connection) gets a token bucket of `state_rate_per_s`
  with a burst of `state_burst`, and all peers together ten times that: excess requests are
  read, counted `rate_limited` and answered with nothing (a monitor asks again, Lazy Pirate);
- `since_verdicts` is clamped to the stream's range before it reaches SQLite.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from fpmon.errors import FpmonError
from fpmon.session import CurveServer, Session
from fpmon.wire import Limits, StateReply, StateRequest
from fpmon.wire.codec import RejectCounter

REQUEST_LIMITS = Limits(max_bytes=64 * 1024)
PER_WAKEUP = 256  # requests read per poll: refusing one costs a few microseconds
MAX_PEERS = 4096  # buckets kept; the least recently seen peer is forgotten first
TOTAL_FACTOR = 10.0  # all peers together: this many times one peer's rate and burst


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.t = burst, now

    def take(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.t) * self.rate)
        self.t = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class RateLimit:
    """A bucket per peer (bounded in number) and one for everyone: a flood of fresh
    connections, each a new peer without Curve, still gets only the total."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.total = TokenBucket(rate * TOTAL_FACTOR, burst * TOTAL_FACTOR, clock())
        self.peers: OrderedDict[bytes, TokenBucket] = OrderedDict()

    def allow(self, peer: bytes) -> bool:
        now = self.clock()
        bucket = self.peers.pop(peer, None) or TokenBucket(self.rate, self.burst, now)
        self.peers[peer] = bucket  # most recently seen last
        while len(self.peers) > MAX_PEERS:
            self.peers.popitem(last=False)
        return bucket.take(now) and self.total.take(now)


class StateServer:
    """The ROUTER and its policy; the daemon's loop calls `answer()` when it is readable."""

    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoint: str,
        reply: Callable[[int], StateReply],
        stream_seq: Callable[[], int],
        rejects: RejectCounter,
        *,
        rate_per_s: float,
        burst: float,
        curve: tuple[bytes, bytes, Path] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`curve`: (our public, our secret, folder of allowed monitor keys)."""
        self.reply, self.stream_seq, self.rejects = reply, stream_seq, rejects
        self.limit = RateLimit(rate_per_s, burst, clock)
        self.auth: Any = None
        role = None
        if curve is not None:
            role = self._curve(ctx, *curve)
        # The peer the bucket is kept for is its Curve key (ZAP's User-Id): a monitor that
        # reconnects keeps its bucket. Without Curve, it is the connection's routing id.
        self.session = Session(
            ctx,
            zmq.ROUTER,
            limits=REQUEST_LIMITS,
            expect=(StateRequest.TOPIC,),
            security=role,
            max_frame_bytes=REQUEST_LIMITS.max_bytes,  # a request is tiny: no slack needed
            rejects=rejects,
            admit=lambda peer: None if self.limit.allow(peer) else "rate_limited",
        )
        self.sock = self.session.socket  # what the daemon's poller registers
        self.endpoint = self.session.bind(endpoint, "[replay] state")

    def _curve(
        self, ctx: zmq.Context[Any], public: bytes, secret: bytes, allowed: Path
    ) -> CurveServer:
        from zmq.auth.thread import ThreadAuthenticator

        # zmq.auth only logs when a key folder fails to load: check it ourselves.
        if not (allowed.is_dir() and any(allowed.glob("*.key"))):
            raise FpmonError(f"{allowed}: no monitor Curve public keys (*.key) to allow")
        self.auth = ThreadAuthenticator(ctx)
        self.auth.start()
        self.auth.configure_curve(domain="state", location=str(allowed))
        return CurveServer(public, secret, "state")

    def answer(self) -> None:
        """Requests past the rate limit are read, counted `rate_limited` and left unanswered."""
        for _ in range(PER_WAKEUP):
            got = self.session.recv()
            if got is None:
                return
            if not isinstance(got.msg, StateRequest):
                continue  # counted by the session
            # Anything past the stream's end asks for nothing new; SQLite cannot take ints > 2**63.
            since = min(max(got.msg.since_verdicts, 0), self.stream_seq())
            self.session.send(self.reply(since), got.envelope)

    def close(self) -> None:
        self.session.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
