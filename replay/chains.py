"""Per-node chain checks on every commitment: gapless seq, hash chain, pinned signed heads.

A gap, fork, reorder, broken link or bad head signature is returned as a `Break` at once; the
checker then re-anchors on what it received so one break does not cascade into many.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fpmon.chain import GENESIS, next_chain, verify_head
from fpmon.wire import Commit, Head

WINDOW = 4096  # recent (seq -> chain) kept per node, to recognise duplicates, forks and heads
MAX_EARLY_HEADS = 64

OK, DUPLICATE, ANCHORED = "ok", "duplicate", "anchored"


@dataclass(frozen=True)
class Break:
    node: str
    seq: int
    kind: str  # gap, reorder, fork, bad_link, bad_signature, wrong_key, head_mismatch
    detail: str


@dataclass
class NodeChain:
    pubkey: bytes
    seq: int = -1  # last accepted commit
    chain: bytes = GENESIS
    anchored: bool = False  # False until the first commit (or restored state) fixes the chain
    recent: dict[int, bytes] = field(default_factory=dict)
    early_heads: dict[int, Head] = field(default_factory=dict)
    head_seq: int = -1
    commits: int = 0


class ChainChecker:
    def __init__(self, pubkeys: dict[str, bytes]) -> None:
        self.nodes = {name: NodeChain(key) for name, key in pubkeys.items()}

    def restore(self, node: str, seq: int, chain: bytes) -> None:
        """Continue from persisted state; the next commit must link to it or it re-anchors."""
        st = self.nodes[node]
        st.seq, st.chain, st.anchored = seq, chain, False
        st.recent[seq] = chain

    def _accept(self, st: NodeChain, seq: int, chain: bytes) -> None:
        st.seq, st.chain, st.anchored = seq, chain, True
        st.recent[seq] = chain
        st.recent.pop(seq - WINDOW, None)

    def on_commit(self, c: Commit) -> tuple[str, Break | None]:
        """(outcome, break): outcome is ok, duplicate or anchored (first sight, unverifiable)."""
        st = self.nodes[c.node]
        st.commits += 1
        seq = c.seq
        if seq == st.seq + 1 and (st.anchored or st.seq >= 0 or seq == 0):
            prev = st.chain
            self._accept(st, seq, c.chain)
            if c.chain != next_chain(prev, c.record_digest):
                return OK, Break(
                    c.node,
                    seq,
                    "bad_link",
                    f"chain at seq {seq} is not H(previous chain ‖ record digest)",
                )
            return OK, self._check_early_head(st, c.node, seq)
        if not st.anchored and st.seq < 0:
            # First commit seen from this node since start: nothing to link it to yet.
            self._accept(st, seq, c.chain)
            return ANCHORED, None
        if seq <= st.seq:
            known = st.recent.get(seq)
            if known == c.chain:
                return DUPLICATE, None
            if known is not None:
                return OK, Break(c.node, seq, "fork", f"two different chains for seq {seq}")
            return OK, Break(c.node, seq, "reorder", f"seq {seq} arrived after seq {st.seq}")
        if not st.anchored:
            # Restored state and commits were published while this daemon was down: the
            # daemon's own downtime is not the node's fault, so re-anchor without a finding.
            self._accept(st, seq, c.chain)
            return ANCHORED, None
        missing = f"{st.seq + 1}" if seq == st.seq + 2 else f"{st.seq + 1}..{seq - 1}"
        self._accept(st, seq, c.chain)
        return OK, Break(c.node, seq, "gap", f"seq {missing} never arrived (got {seq})")

    def _check_early_head(self, st: NodeChain, node: str, seq: int) -> Break | None:
        head = st.early_heads.pop(seq, None) if st.early_heads else None
        if head is not None and head.chain != st.chain:
            return Break(
                node,
                seq,
                "head_mismatch",
                f"signed head at seq {seq} names another chain than the commits",
            )
        return None

    def on_head(self, h: Head) -> Break | None:
        st = self.nodes[h.node]
        if h.pubkey != st.pubkey:
            return Break(
                h.node,
                h.seq,
                "wrong_key",
                "head signed with a key other than the node's pinned key",
            )
        if not verify_head(st.pubkey, h.node, h.seq, h.chain, h.sig):
            return Break(
                h.node, h.seq, "bad_signature", f"head signature for seq {h.seq} does not verify"
            )
        st.head_seq = max(st.head_seq, h.seq)
        known = st.recent.get(h.seq)
        if known is not None:
            if known != h.chain:
                return Break(
                    h.node,
                    h.seq,
                    "head_mismatch",
                    f"signed head at seq {h.seq} names another chain than the commits",
                )
        elif h.seq > st.seq and len(st.early_heads) < MAX_EARLY_HEADS:
            st.early_heads[h.seq] = h  # its commit is still on the way
        return None
