"""Openings: ask a node for a committed record over DEALER, with a deadline and retries.

Outcomes, one per pending (node, seq): `opened` (bytes whose digest is the committed
`record_digest`), `bad_opening` (other bytes), `unopened` (no answer after every retry nor
within the grace after them), `purged` / `unknown` (the node says so explicitly). Replies are
untrusted: decoded with hard limits, matched to a pending request by seq and nonce, rejected
with a counted reason.

Grace: a request given up on waits `grace_s` more in a bounded map before it is `unopened`,
so an honest answer that arrived late (a slow disk, a congested link) is judged like any other
instead of dropped as `unsolicited`. `unopened` is only decided once grace ends, so the store's
one verdict per (node, seq) never has to be replaced. The map holds at most `max_late`
requests (oldest decided `unopened` first) and only requests we made: late replies that match
none are counted and dropped, so a flood of them cannot grow memory.
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

import zmq

from fpmon.canonical import digest as sha256
from fpmon.session import CurveClient, Session
from fpmon.wire import Commit, LinksReply, LinksRequest, OpenReply, OpenRequest
from fpmon.wire.codec import Limits, RejectCounter

UNSENT_RETRY_S = 0.05


@dataclass
class Pending:
    commit: Commit
    nonce: bytes
    created: float = 0.0
    attempts: int = 0  # requests actually handed to a connected peer
    deadline: float = 0.0


@dataclass(frozen=True)
class Outcome:
    kind: Literal["opened", "bad_opening", "unopened", "purged", "unknown"]
    commit: Commit
    record: bytes | None = None
    reason: str = ""


@dataclass
class Late:
    """A request given up on, still matched by its nonce until `until` (grace)."""

    pending: Pending
    until: float
    why: str


class Opener:
    def __init__(
        self,
        ctx: zmq.Context[Any],
        endpoints: dict[str, str],
        *,
        verifier: str,
        deadline_s: float,
        retries: int,
        limits: Limits,
        curve: dict[str | None, tuple[str, bytes, bytes]] | None = None,
        grace_s: float = 0.0,
        max_late: int = 4096,
    ) -> None:
        """`curve[node]` = (node's Z85 server key, our public key, our secret key)."""
        self.verifier = verifier
        self.deadline_s = deadline_s
        self.retries = retries
        self.grace_s = grace_s
        self.max_late = max_late
        self.rejects = RejectCounter()  # every node's session counts here
        self.answered_late = 0  # answers judged that came after the last retry's deadline
        self.pending: dict[tuple[str, int], Pending] = {}
        self.links: list[tuple[str, LinksReply]] = []  # answers for the repairer (repair.py)
        # In give-up order, which is expiry order (one grace for all): the oldest is first.
        self.late: OrderedDict[tuple[str, int], Late] = OrderedDict()
        self.sessions: dict[str, Session] = {}
        self.node_of: dict[zmq.Socket[Any], str] = {}  # by the socket a poller returns
        for node, ep in endpoints.items():
            s = Session(
                ctx,
                zmq.DEALER,
                limits=limits,
                expect=(OpenReply.TOPIC, LinksReply.TOPIC),
                security=CurveClient(*curve[node]) if curve and node in curve else None,
                rejects=self.rejects,
            )
            s.socket.immediate = True  # nothing queues towards a node not connected: retry
            s.socket.rcvhwm = 1000
            s.connect(ep)
            self.sessions[node] = s
            self.node_of[s.socket] = node

    def close(self) -> None:
        for s in self.sessions.values():
            s.close(linger=0)

    def request(self, commit: Commit, now: float | None = None) -> None:
        key = (commit.node, commit.seq)
        if key in self.pending or key in self.late:
            return
        now = now or time.monotonic()
        p = Pending(commit, os.urandom(16), created=now)
        self.pending[key] = p
        self._send(p, now)

    def _send(self, p: Pending, now: float) -> None:
        msg = OpenRequest(node=self.verifier, t=time.time(), seq=p.commit.seq, nonce=p.nonce)
        if not self.sessions[p.commit.node].send(msg, block=False):
            # Not connected yet (or reconnecting): not an attempt the node could answer; try
            # again shortly, within the same overall budget.
            p.deadline = now + min(UNSENT_RETRY_S, self.deadline_s)
            return
        p.attempts += 1
        p.deadline = now + self.deadline_s

    def on_readable(self, sock: zmq.Socket[Any]) -> list[Outcome]:
        node = self.node_of[sock]
        session = self.sessions[node]
        out = []
        for _ in range(256):
            got = session.recv()
            if got is None:
                break
            if isinstance(got.msg, LinksReply):
                self.links.append((node, got.msg))
            elif isinstance(got.msg, OpenReply):
                o = self._reply(node, got.msg)
                if o is not None:
                    out.append(o)
        return out

    def send(self, node: str, msg: LinksRequest) -> bool:
        """Another request on the node's openings channel; False when not connected."""
        return self.sessions[node].send(msg, block=False)

    def _reply(self, node: str, msg: OpenReply) -> Outcome | None:
        p = self._match(node, msg)
        if p is None:
            self.rejects.count("unsolicited")  # after the grace, replayed, or forged
            return None
        c = p.commit
        if msg.status == "ok":
            if msg.record is None:
                return Outcome("bad_opening", c, None, "reply says ok but carries no record")
            if sha256(msg.record) != c.record_digest:
                return Outcome(
                    "bad_opening",
                    c,
                    msg.record,
                    "opened bytes do not hash to the committed record_digest",
                )
            return Outcome("opened", c, msg.record)
        if msg.status in ("purged", "unknown"):
            return Outcome(msg.status, c, None, msg.reason or f"node says {msg.status}")
        return Outcome("unopened", c, None, f"node answered {msg.status!r}: {msg.reason}"[:200])

    def _match(self, node: str, msg: OpenReply) -> Pending | None:
        """The request this reply answers (seq and nonce), in flight or in grace; removed."""
        key = (node, msg.seq)
        p = self.pending.get(key)
        if p is not None and msg.nonce == p.nonce:
            return self.pending.pop(key)
        late = self.late.get(key)
        if late is not None and msg.nonce == late.pending.nonce:
            del self.late[key]
            self.answered_late += 1
            return late.pending
        return None

    def tick(self, now: float | None = None) -> list[Outcome]:
        """Retry what timed out; after the last retry wait out the grace, then unopened."""
        now = now or time.monotonic()
        out: list[Outcome] = []
        for key, p in list(self.pending.items()):
            if now < p.deadline:
                continue
            budget = self.deadline_s * (self.retries + 1)
            if p.attempts <= self.retries and now - p.created < budget:
                self._send(p, now)
                continue
            del self.pending[key]
            why = (
                f"no answer in {p.attempts} attempts of {self.deadline_s:g} s"
                if p.attempts
                else f"node not reachable (no connection) for {budget:g} s"
            )
            out += self._give_up(key, p, why, now)
        return out + self._end_grace(now)

    def _give_up(self, key: tuple[str, int], p: Pending, why: str, now: float) -> list[Outcome]:
        if self.grace_s <= 0:
            return [Outcome("unopened", p.commit, None, why)]
        self.late[key] = Late(p, now + self.grace_s, why)
        out = []
        while len(self.late) > self.max_late:  # bounded: the oldest is decided at once
            _, old = self.late.popitem(last=False)
            cut = f"{old.why}; grace cut short ({self.max_late} late answers already awaited)"
            out.append(Outcome("unopened", old.pending.commit, None, cut))
        return out

    def _end_grace(self, now: float) -> list[Outcome]:
        out = []
        while self.late:
            key, late = next(iter(self.late.items()))
            if now < late.until:
                break
            del self.late[key]
            why = f"{late.why}, nor in the {self.grace_s:g} s grace after"
            out.append(Outcome("unopened", late.pending.commit, None, why))
        return out
