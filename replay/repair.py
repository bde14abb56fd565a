"""Gap repair: fetch what the feed lost from the node's own log before anything is judged.

A PUB socket drops messages while its hub restarts, a node killed between logging and
publishing leaves commits unpublished, a flood overruns queues, and this daemon misses all it
is down for. None of that is the node's fault, so a hole in what arrived is a question to the
node (a `links?` request on its openings channel), never a finding by itself. The node answers
from its log with a head signed over the segment; `ChainChecker.on_links` verifies it and
releases what was held. A node that does not answer keeps its held commits unjudged, raises
one `gap_unrepaired` warning after `timeout_s`, and is asked again, slower; only a position the
node signed and then denies is a chain break (chains.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from fpmon.replay.chains import ChainChecker, Result
from fpmon.wire import LinksReply, LinksRequest
from fpmon.wire.messages import MAX_LINKS

SETTLE_S = 0.5  # a hole younger than this may still fill from the feed (publish in flight)


@dataclass
class Ask:
    nonce: bytes
    first: int
    sent: float
    since: float  # when this node's hole was first seen (for the unrepaired warning)
    attempts: int = 1
    warned: bool = False


@dataclass(frozen=True)
class Unrepaired:
    node: str
    first: int
    last: int
    waited_s: float
    attempts: int


class Repairer:
    def __init__(
        self,
        chains: ChainChecker,
        send: Callable[[str, LinksRequest], bool],
        verifier: str,
        retry_s: float = 2.0,
        timeout_s: float = 60.0,
        cover_after_s: float = 5.0,
    ) -> None:
        self.chains = chains
        self.send = send
        self.verifier = verifier
        self.retry_s = retry_s
        self.timeout_s = timeout_s
        self.cover_after_s = cover_after_s
        self.asks: dict[str, Ask] = {}
        self._seen: dict[str, float] = {}  # node -> when its current want first showed
        self._uncovered: dict[str, float] = {}
        self.requests = 0
        self.unsolicited = 0

    def tick(self, now: float | None = None) -> list[Unrepaired]:
        """Ask each node for what is missing; report holes waiting longer than the timeout."""
        now = time.monotonic() if now is None else now
        out = []
        for node, st in self.chains.nodes.items():
            want = st.wanted() or self._cover(node, st.seq, st.head_seq, now)
            if want is None:
                self._seen.pop(node, None)
                self.asks.pop(node, None)
                continue
            since = self._seen.setdefault(node, now)
            if now - since < SETTLE_S:
                continue
            ask = self.asks.get(node)
            backoff = self.retry_s * min(2 ** ((ask.attempts - 1) if ask else 0), 16)
            if ask is None or now - ask.sent >= backoff or ask.first != want[0]:
                self._ask(node, want, since, now, ask)
            ask = self.asks.get(node)
            if ask and not ask.warned and now - ask.since >= self.timeout_s:
                ask.warned = True
                out.append(Unrepaired(node, want[0], want[1], now - ask.since, ask.attempts))
        return out

    def _cover(self, node: str, seq: int, head_seq: int, now: float) -> tuple[int, int] | None:
        """Commits no signed head has covered for a while: ask for a head over them."""
        if seq < 0 or head_seq >= seq:
            self._uncovered.pop(node, None)
            return None
        since = self._uncovered.setdefault(node, now)
        return (seq, seq) if now - since >= self.cover_after_s else None

    def _ask(
        self, node: str, want: tuple[int, int], since: float, now: float, prev: Ask | None
    ) -> None:
        first, last = want
        count = max(1, min(last - first + 1, MAX_LINKS))
        nonce = os.urandom(12)
        req = LinksRequest(node=self.verifier, t=time.time(), first=first, count=count, nonce=nonce)
        attempts = (prev.attempts + 1) if prev else 1
        warned = prev.warned if prev else False
        self.asks[node] = Ask(nonce, first, now, since, attempts, warned)
        if self.send(node, req):
            self.requests += 1

    def on_reply(self, node: str, r: LinksReply) -> Result | None:
        ask = self.asks.get(node)
        if ask is None or r.nonce != ask.nonce or r.node != node:
            self.unsolicited += 1  # late, replayed or forged: the next ask gets a fresh one
            return None
        del self.asks[node]
        self._uncovered.pop(node, None)
        return self.chains.on_links(node, r)
