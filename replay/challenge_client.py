"""The verifier as a client of each node's intake: sends challenges on the schedule, times them.

Its own thread, owning one DEALER per challenged node, so a reply is timestamped the moment it
is read rather than whenever the daemon's main loop (store writes, signing, ingest bursts) gets
to it. It speaks the wire as any client does (`SubmitRequest` over DEALER, `uuid4().hex`
request ids, the configured client name), and hands what happened to the main thread as events
on a queue. Each request id is registered *before* the request leaves (`register`), so the
daemon can recognise the node's commitment for it however early that arrives.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import zmq

from fpmon.replay.challenge_schedule import ChallengeSchedule
from fpmon.session import CurveClient, Session
from fpmon.wire import SubmitReply, SubmitRequest
from fpmon.wire.codec import Limits, RejectCounter

log = logging.getLogger("fpmon.replay.challenges")

UNSENT_RETRY_S = 0.05  # no connection to the node's intake yet: try again this soon
IDLE_POLL_S = 0.1  # the longest the thread sleeps, so a stop is noticed


@dataclass(frozen=True)
class Plan:
    """What a challenge asks for and how long it may take."""

    client: str  # `SubmitRequest.node`: the name ordinary clients use
    prompts: Sequence[str]  # empty: seeded random words
    max_tokens: Sequence[int]
    timeout_s: float


@dataclass(frozen=True)
class Sent:
    node: str
    k: int  # the challenge's index in the node's schedule
    request_id: str
    max_tokens: int
    sent: float  # monotonic, when ZeroMQ took it (latency starts here)
    sent_wall: float


@dataclass(frozen=True)
class Answered:
    sent: Sent
    reply: SubmitReply
    answered: float  # monotonic, when the reply was read

    @property
    def latency_s(self) -> float:
        return self.answered - self.sent.sent


@dataclass(frozen=True)
class Failed:
    sent: Sent
    why: Literal["unreachable", "timeout"]
    detail: str


Event = Sent | Answered | Failed


@dataclass
class _Flight:
    sent: Sent
    deadline: float
    on_wire: bool = False
    request: SubmitRequest | None = None  # until ZeroMQ takes it


class ChallengeClient(threading.Thread):
    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoints: dict[str, str],
        schedule: ChallengeSchedule,
        plan: Plan,
        limits: Limits,
        register: Callable[[Sent], None],
        curve: dict[str, tuple[str, bytes, bytes]] | None = None,
    ) -> None:
        """`curve[node]` = (node's Z85 server key, our public key, our secret key)."""
        super().__init__(name="fpmon-challenges", daemon=True)
        self.ctx, self.endpoints, self.schedule, self.plan = ctx, endpoints, schedule, plan
        self.limits, self.register, self.curve = limits, register, curve or {}
        self.events: queue.Queue[Event] = queue.Queue()
        # Replies that decode to nothing we asked; every node's session counts here, and
        # `rejects()` reads it from another thread (RejectCounter locks).
        self._rejects = RejectCounter()
        self.stop_event = threading.Event()

    def stop(self) -> None:
        self.stop_event.set()

    def rejects(self) -> Counter[str]:
        return Counter(self._rejects.snapshot())

    def _session(self, node: str, ep: str) -> Session:
        s = Session(
            self.ctx,
            zmq.DEALER,
            limits=self.limits,
            expect=(SubmitReply.TOPIC,),
            security=CurveClient(*self.curve[node]) if node in self.curve else None,
            rejects=self._rejects,
        )
        s.socket.immediate = True  # nothing queues towards a node that is not connected
        s.connect(ep)
        return s

    def run(self) -> None:
        socks = {node: self._session(node, ep) for node, ep in self.endpoints.items()}
        node_of = {s.socket: node for node, s in socks.items()}
        poller = zmq.Poller()
        for s in socks.values():
            poller.register(s.socket, zmq.POLLIN)
        start = time.monotonic()
        k = dict.fromkeys(socks, 0)
        due = {n: start + self.schedule.interval(n, 0) for n in socks}
        flights: dict[str, _Flight] = {}
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                for node in socks:
                    if node not in flights and now >= due[node]:
                        flights[node] = self._begin(node, k[node], now)
                        k[node] += 1
                        due[node] += self.schedule.interval(node, k[node])
                        # A node down for long leaves due times behind: skip them rather
                        # than burst them back to back when it returns.
                        while due[node] < now - self.plan.timeout_s:
                            k[node] += 1
                            due[node] += self.schedule.interval(node, k[node])
                for node, f in list(flights.items()):
                    if not f.on_wire:
                        self._send(socks[node], f, now)
                    if now >= f.deadline:
                        del flights[node]
                        self.events.put(self._expired(f))
                wake = min([*due.values(), *(f.deadline for f in flights.values())], default=now)
                if any(not f.on_wire for f in flights.values()):
                    wake = min(wake, now + UNSENT_RETRY_S)
                timeout = max(0.0, min(wake - time.monotonic(), IDLE_POLL_S))
                for sock, _ in poller.poll(int(timeout * 1000) + 1):
                    node = node_of[sock]
                    self._read(socks[node], node, flights)
        finally:
            for s in socks.values():
                s.close(linger=0)

    def _begin(self, node: str, k: int, now: float) -> _Flight:
        plan, sch = self.plan, self.schedule
        req = SubmitRequest(
            node=plan.client,
            t=time.time(),
            request_id=uuid.uuid4().hex,
            prompt=sch.prompt(node, k, plan.prompts),
            max_tokens=sch.max_tokens(node, k, plan.max_tokens),
        )
        sent = Sent(node, k, req.request_id, req.max_tokens, now, time.time())
        self.register(sent)  # before it leaves: its commitment may arrive before its reply
        return _Flight(sent, now + plan.timeout_s, request=req)

    def _send(self, session: Session, f: _Flight, now: float) -> None:
        assert f.request is not None
        if not session.send(f.request, block=False):
            return  # not connected (down, restarting, or our key refused): retry shortly
        t = time.monotonic()
        f.on_wire, f.request = True, None
        # The latency starts when ZeroMQ took the request, not at the scheduled time.
        f.sent = Sent(f.sent.node, f.sent.k, f.sent.request_id, f.sent.max_tokens, t, time.time())
        f.deadline = t + self.plan.timeout_s
        self.events.put(f.sent)

    def _expired(self, f: _Flight) -> Failed:
        if f.on_wire:
            return Failed(f.sent, "timeout", f"no reply within {self.plan.timeout_s:g} s")
        return Failed(
            f.sent,
            "unreachable",
            f"no connection to the node's intake for {self.plan.timeout_s:g} s (down, "
            "restarting, or the verifier's client key is not in its clients_dir)",
        )

    def _read(self, session: Session, node: str, flights: dict[str, _Flight]) -> None:
        for _ in range(64):
            got = session.recv()
            if got is None:
                return
            answered = time.monotonic()
            reply = got.msg
            if not isinstance(reply, SubmitReply):
                continue  # counted by the session
            f = flights.get(node)
            if f is None or not f.on_wire or reply.request_id != f.sent.request_id:
                self._rejects.count("unsolicited")  # late (after the timeout) or not ours
                continue
            del flights[node]
            self.events.put(Answered(f.sent, reply, answered))
