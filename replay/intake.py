"""Everything a subscribed frame goes through: decode, attribute, chain-check, sample, count.

The hot path of the daemon (every commitment of every node). It only records what happened
(breaks, sampled commits, telemetry, rejections); the daemon acts on those after each poll.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from fpmon.replay.chains import DUPLICATE, Break, ChainChecker, Result
from fpmon.replay.rows import RowBook
from fpmon.replay.sampling import Sampler
from fpmon.session import Received
from fpmon.wire import Commit, Head, Message, Telemetry, WireError, decode
from fpmon.wire.codec import Limits

TOPICS = ("commit", "head", "telemetry")
MAX_CLOCK_AHEAD_S = 300.0  # a node's clock may run ahead of ours; not by more than this


@dataclass
class NodeStats:
    commits: int = 0
    sampled: int = 0
    duplicates: int = 0
    rejects: Counter[str] = field(default_factory=Counter)
    last_commit_t: float = 0.0
    last_telemetry: Telemetry | None = None
    last_telemetry_t: float = 0.0
    tokens: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=100_000))
    window_start: float = 0.0
    window_msgs: int = 0
    window_rejects: int = 0
    last_msg_t: float = 0.0  # monotonic: when anything valid last came from this node
    spoofed: int = 0  # inputs under this node's name that it never signed (see chains.py)
    repaired: int = 0  # commits recovered from its log instead of the feed
    thin: int = 0  # positions verified from its log whose record body was purged


class Intake:
    def __init__(
        self,
        pubkeys: dict[str, bytes],
        sampler: Sampler,
        limits: Limits,
        curve_keys: dict[str, str] | None = None,
    ) -> None:
        self.chains = ChainChecker(pubkeys)
        self.sampler = sampler
        self.limits = limits
        self.by_curve_key = {v: k for k, v in (curve_keys or {}).items() if v}
        self.stats = {name: NodeStats() for name in pubkeys}
        self.rejects: Counter[str] = Counter()  # from no attributable node
        self.breaks: list[tuple[Break, Commit | None]] = []
        self.samples: list[Commit] = []
        self.telemetry: list[Telemetry] = []
        self.rows = RowBook()  # verified commits, for linking opened rows (replay/rows.py)
        # Sees every verified commitment; True forces it open whatever the sample says (the
        # record of a verifier-timed challenge, replay/challenges.py).
        self.on_commit: Callable[[Commit], bool] | None = None

    def reject(self, node: str | None, reason: str) -> None:
        st = self.stats.get(node) if node else None
        if st is None:
            self.rejects[reason] += 1
            return
        st.rejects[reason] += 1
        st.window_rejects += 1

    def handle(self, frames: list[bytes], via: str | None, user_id: str | None = None) -> None:
        """Raw frames, decoded here (tests and benches; the daemon's SUB sessions decode)."""
        try:
            msg: Message | None = decode(frames, self.limits, TOPICS)
        except WireError as e:
            self.take(None, e, via, user_id)
            return
        self.take(msg, None, via, user_id)

    def received(self, got: Received, via: str | None) -> None:
        """What the SUB session subscribed to node `via` (None: the hub) read."""
        self.take(got.msg, got.error, via, got.user_id or None)

    def take(
        self, msg: Message | None, err: WireError | None, via: str | None, user_id: str | None
    ) -> None:
        """One message (or why its frames were rejected) from the socket subscribed to node
        `via` (None: through the hub).

        A message is attributed to the node whose connection carried it (each direct SUB pins
        that node's Curve server key) or whose Curve key ZeroMQ reports as `User-Id`; a name
        inside the payload that disagrees is rejected. Through the hub the payload names the
        node, and the node's pinned Ed25519 head key binds the commitments to it.
        """
        if via is not None:
            self.stats[via].window_msgs += 1
        if user_id is not None:
            owner = self.by_curve_key.get(user_id)
            if owner is None or (via is not None and owner != via):
                self.reject(via, "unknown_curve_key")
                return
            via = owner
        if err is not None:
            self.reject(via, err.reason)
            return
        assert msg is not None
        node = msg.node
        if via is not None and node != via:
            self.reject(via, "node_mismatch")
            return
        st = self.stats.get(node)
        if st is None:
            self.reject(None, "unknown_node")
            return
        if via is None:
            st.window_msgs += 1
        if msg.t > time.time() + MAX_CLOCK_AHEAD_S:
            # A commit dated in the future would dodge the purge and timing checks.
            self.reject(node, "future_time")
            return
        st.last_msg_t = time.monotonic()
        if type(msg) is Commit:
            res = self.chains.on_commit(msg)
            if res.outcome is DUPLICATE:
                st.duplicates += 1
            self.apply(msg.node, res)
        elif type(msg) is Head:
            self.apply(msg.node, self.chains.on_head(msg))
        elif isinstance(msg, Telemetry):
            st.last_telemetry = msg
            st.last_telemetry_t = time.time()
            self.telemetry.append(msg)

    def apply(self, node: str, res: Result, repaired: bool = False) -> None:
        """Count, sample and report what a chain step verified (see replay/chains.py)."""
        st = self.stats[node]
        for c in res.accepted:
            self.rows.add(c)
            st.commits += 1
            st.repaired += repaired
            st.last_commit_t = max(st.last_commit_t, c.t)
            st.tokens.append((c.t, c.prompt_tokens + c.output_tokens))
            forced = self.on_commit is not None and self.on_commit(c)
            if forced or self.sampler.sampled(c.node, c.seq):
                st.sampled += 1
                self.samples.append(c)
        st.thin += res.thin
        if res.spoofed:
            st.spoofed += res.spoofed
            st.rejects["spoofed"] += res.spoofed
            st.window_rejects += res.spoofed
        for brk, broken in res.breaks:
            self.breaks.append((brk, broken))
            self.sampler.suspect(node)

    def drain(self) -> tuple[list[tuple[Break, Commit | None]], list[Commit], list[Telemetry]]:
        out = self.breaks, self.samples, self.telemetry
        self.breaks, self.samples, self.telemetry = [], [], []
        return out
