"""Ordinary client traffic for a real agent's intake, in a thread: what a challenge queues behind.

Requests at exponential intervals (`rate` per second), at most `window` in flight, prompts drawn
from the demo load generator's pool (`fpmon.monitor.loadgen.PROMPTS`, the fleet's ordinary
clients), as any client sends them (`SubmitRequest` over a DEALER).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from typing import Any

import zmq

from fpmon.monitor.loadgen import PROMPTS
from fpmon.session import CurveClient, Session
from fpmon.wire import SubmitReply, SubmitRequest


class ClientLoad(threading.Thread):
    def __init__(
        self,
        endpoint: str,
        rate: float,
        max_tokens: int = 16,
        window: int = 4,
        seed: int = 1,
        curve: tuple[bytes, bytes, bytes] | None = None,
    ) -> None:
        """`curve` = (agent's Z85 server key, our public key, our secret key)."""
        super().__init__(name="fpmon-client-load", daemon=True)
        self.endpoint, self.rate, self.max_tokens, self.window = endpoint, rate, max_tokens, window
        self.rng = random.Random(seed)
        self.curve = curve
        self.stop_event = threading.Event()
        self.sent = self.ok = self.refused = 0
        self.latencies: list[float] = []

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        ctx: zmq.Context[Any] = zmq.Context.instance()
        security = CurveClient(*self.curve) if self.curve else None
        s = Session(ctx, zmq.DEALER, expect=(SubmitReply.TOPIC,), security=security)
        s.connect(self.endpoint)
        in_flight: dict[str, float] = {}
        next_at = time.monotonic()
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now >= next_at and len(in_flight) < self.window:
                    rid = uuid.uuid4().hex
                    req = SubmitRequest(
                        node="loadgen",
                        t=time.time(),
                        request_id=rid,
                        prompt=self.rng.choice(PROMPTS),
                        max_tokens=self.max_tokens,
                    )
                    s.send(req)
                    in_flight[rid] = now
                    self.sent += 1
                    next_at = now + self.rng.expovariate(self.rate)
                wait = max(0.0, min(next_at - time.monotonic(), 0.05))
                got = s.recv(int(wait * 1000) + 1)
                if got is not None and isinstance(got.msg, SubmitReply):
                    self._read(got.msg, in_flight)
        finally:
            s.close()

    def _read(self, reply: SubmitReply, in_flight: dict[str, float]) -> None:
        t0 = in_flight.pop(reply.request_id, None)
        if reply.status == "ok":
            self.ok += 1
            if t0 is not None:
                self.latencies.append(time.monotonic() - t0)
        else:
            self.refused += 1
