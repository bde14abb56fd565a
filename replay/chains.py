"""Per-node chain state: what the verifier has verified of each node's hash chain.

The state only advances through verified steps: a commit that links to the verified chain
(`seq = last + 1`, `chain = H(last chain ‖ record_digest)`), or a segment of the node's own
log (`links`) whose last position the node signed. Everything else is *held*, not judged:

- a commit beyond a hole (lost by a hub restart, a crash, a flood, or this daemon's own
  downtime) waits while the daemon fetches the missing positions from the node's log;
- a commit that contradicts the verified chain, or a head whose signature does not verify
  under the node's pinned key, is nobody's statement until the node signs it: anyone on the
  hub could have sent it. It is counted as spoofing, never held against the node.

A chain break is raised only on the node's own signature: a signed head naming another chain
than the one verified at that seq (`fork`), a signed links segment that does not continue the
verified chain (`bad_link`), or a hole the node signed past and then denies (`gap`). So
ordinary faults cannot make an honest node look guilty, and a forger cannot either.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from fpmon.chain import GENESIS, next_chain, verify_head
from fpmon.wire import Commit, Head, Link, LinksReply

WINDOW = 4096  # recent (seq -> chain) kept per node, to recognise duplicates and forks
MAX_HELD = 8192  # commits held per node while a hole is repaired
MAX_SIGNED = 256  # signed heads beyond the verified chain kept per node

OK, DUPLICATE, HELD, SPOOFED = "ok", "duplicate", "held", "spoofed"


@dataclass(frozen=True)
class Break:
    node: str
    seq: int
    kind: str  # gap, fork, bad_link
    detail: str


@dataclass
class Result:
    """What one input did: commits now verified (in order: count and sample them), breaks
    the node signed, and how many inputs were dropped as spoofed."""

    accepted: list[Commit] = field(default_factory=list)
    breaks: list[tuple[Break, Commit | None]] = field(default_factory=list)
    outcome: str = OK
    spoofed: int = 0
    thin: int = 0  # positions verified from links whose record body the node had purged


@dataclass
class NodeChain:
    pubkey: bytes
    seq: int = -1  # last verified position
    chain: bytes = GENESIS
    anchored: bool = False  # a verified position exists (first signed head, or restored)
    recent: dict[int, bytes] = field(default_factory=dict)
    held: dict[int, Commit] = field(default_factory=dict)
    signed: dict[int, bytes] = field(default_factory=dict)  # signed heads beyond `seq`
    head_seq: int = -1  # highest seq covered by a valid signed head
    commits: int = 0

    def wanted(self) -> tuple[int, int] | None:
        """The positions to fetch from the node's log: (first, last), or None."""
        if not self.held and not (self.anchored and self.head_seq > self.seq):
            return None
        if not self.anchored:
            return min(self.held), max([*self.held, self.head_seq])
        last = max([*self.held, self.head_seq])
        return self.seq + 1, last


class ChainChecker:
    def __init__(self, pubkeys: dict[str, bytes]) -> None:
        self.nodes = {name: NodeChain(key) for name, key in pubkeys.items()}

    def restore(self, node: str, seq: int, chain: bytes) -> None:
        """Continue from this daemon's own persisted (already verified) state."""
        st = self.nodes[node]
        st.seq, st.chain, st.anchored = seq, chain, True
        st.recent[seq] = chain
        st.head_seq = max(st.head_seq, seq)

    # --- commits ------------------------------------------------------------------------
    def on_commit(self, c: Commit) -> Result:
        st = self.nodes[c.node]
        st.commits += 1
        out = Result()
        if st.anchored and c.seq <= st.seq:
            known = st.recent.get(c.seq)
            # Before this daemon's anchor or its window (a republished tail, say): nothing to
            # compare with, so nothing to say. A different chain than verified: not the node's.
            out.outcome = SPOOFED if known not in (None, c.chain) else DUPLICATE
            out.spoofed = int(out.outcome == SPOOFED)
            return out
        genesis = not st.anchored and c.seq == 0  # seq 0 links to the known genesis
        prev = GENESIS if genesis else st.chain
        if (
            (st.anchored or genesis)
            and c.seq == st.seq + 1
            and c.chain == next_chain(prev, c.record_digest)
        ):
            self._accept(st, c.seq, c.chain)
            out.accepted.append(c)
            self._release(c.node, st, out)
            return out
        # Beyond a hole, not linking, or no verified position yet: hold until the node's own
        # log (fetched) or its signature decides.
        if c.seq in st.held and st.held[c.seq].chain != c.chain:
            out.spoofed = 1  # two unsigned claims for one seq: keep the first, count this
        elif len(st.held) < MAX_HELD:
            st.held.setdefault(c.seq, c)
        else:
            out.spoofed = 1
        out.outcome = HELD
        return out

    def _accept(self, st: NodeChain, seq: int, chain: bytes) -> None:
        st.seq, st.chain, st.anchored = seq, chain, True
        st.recent[seq] = chain
        st.recent.pop(seq - WINDOW, None)

    def _release(self, node: str, st: NodeChain, out: Result) -> None:
        """Held commits that now link, in order; held ones at or below the chain are spent."""
        while True:
            nxt = st.held.pop(st.seq + 1, None)
            if nxt is None:
                break
            if nxt.chain != next_chain(st.chain, nxt.record_digest):
                out.spoofed += 1  # contradicts the verified chain and nobody signed it
                continue
            self._accept(st, nxt.seq, nxt.chain)
            out.accepted.append(nxt)
        for seq in [s for s in st.held if s <= st.seq]:
            c = st.held.pop(seq)
            if st.recent.get(seq) != c.chain:
                out.spoofed += 1
        self._check_signed(node, st, out)

    # --- heads --------------------------------------------------------------------------
    def on_head(self, h: Head) -> Result:
        st = self.nodes[h.node]
        out = Result()
        if h.pubkey != st.pubkey or not verify_head(st.pubkey, h.node, h.seq, h.chain, h.sig):
            out.outcome, out.spoofed = SPOOFED, 1  # not the node's signature: anyone's words
            return out
        st.head_seq = max(st.head_seq, h.seq)
        if not st.anchored and not any(s < h.seq for s in st.held):
            # The first signed position anchors the chain; held commits after it link. (Held
            # ones before it wait for the log segment that reaches the head: see `wanted`.)
            self._accept(st, h.seq, h.chain)
            held_at = st.held.pop(h.seq, None)
            if held_at is not None and held_at.chain == h.chain:
                out.accepted.append(held_at)
            self._release(h.node, st, out)
            return out
        if st.anchored and h.seq <= st.seq:
            known = st.recent.get(h.seq)
            if known is not None and known != h.chain:
                out.breaks.append((self._fork(h.node, h.seq), st.held.get(h.seq)))
            return out
        if len(st.signed) < MAX_SIGNED or h.seq in st.signed:
            st.signed[h.seq] = h.chain
        return out

    def _fork(self, node: str, seq: int) -> Break:
        return Break(
            node, seq, "fork", f"the node signed a chain at seq {seq} other than the one verified"
        )

    def _check_signed(self, node: str, st: NodeChain, out: Result) -> None:
        """Signed heads the verified chain has now reached must name the chain verified."""
        for seq in [s for s in st.signed if s <= st.seq]:
            chain = st.signed.pop(seq)
            known = st.recent.get(seq)
            if known is not None and known != chain:
                out.breaks.append((self._fork(node, seq), None))

    # --- repair from the node's own log ---------------------------------------------------
    def on_links(self, node: str, r: LinksReply) -> Result:
        """A segment of the node's log. Verified against its head signature and the chain
        verified so far, it fills the hole and releases what was held."""
        st = self.nodes[node]
        out = Result()
        h = r.head
        if r.status != "ok" or not r.links or h is None:
            return self._denied(node, st, r, out)
        links = r.links
        last = links[-1]
        signed = (
            h.node == node
            and h.pubkey == st.pubkey
            and (h.seq, h.chain) == (last.seq, last.chain)
            and verify_head(st.pubkey, node, h.seq, h.chain, h.sig)
        )
        consecutive = all(b.seq == a.seq + 1 for a, b in itertools.pairwise(links))
        linked = all(
            b.chain == next_chain(a.chain, b.record_digest) for a, b in itertools.pairwise(links)
        )
        if not (signed and consecutive and linked):
            out.outcome, out.spoofed = SPOOFED, 1  # not a segment the node vouches for
            return out
        st.head_seq = max(st.head_seq, h.seq)
        if not st.anchored:
            self._accept(st, links[0].seq, links[0].chain)
            self._take(st, links[0], out)
            links = links[1:]
        for link in links:
            if link.seq <= st.seq:
                if st.recent.get(link.seq) not in (None, link.chain):
                    out.breaks.append((self._fork(node, link.seq), link.commit))
                    return out
                continue
            if link.seq != st.seq + 1:
                continue  # before our window: nothing to say about it
            if link.chain != next_chain(st.chain, link.record_digest):
                brk = Break(
                    node,
                    link.seq,
                    "bad_link",
                    f"the node's own signed log at seq {link.seq} does not continue the "
                    f"chain verified at seq {st.seq}",
                )
                out.breaks.append((brk, link.commit))
                return out
            self._accept(st, link.seq, link.chain)
            self._take(st, link, out)
        self._release(node, st, out)
        return out

    def _take(self, st: NodeChain, link: Link, out: Result) -> None:
        held = st.held.pop(link.seq, None)
        commit = link.commit or held
        if held is not None and held.chain != link.chain:
            out.spoofed += 1
        if commit is not None and commit.chain == link.chain:
            out.accepted.append(commit)
        else:
            out.thin += 1

    def _denied(self, node: str, st: NodeChain, r: LinksReply, out: Result) -> Result:
        """The node's log does not reach what was held. Held commits the node never signed
        are someone else's words; a position it signed and now denies is a gap."""
        log_head = r.log_head
        signed_beyond = [s for s in st.signed if s > log_head]
        if r.status == "unknown" and signed_beyond:
            seq = min(signed_beyond)
            out.breaks.append(
                (
                    Break(
                        node,
                        seq,
                        "gap",
                        f"the node signed its chain at seq {seq} but its log ends at "
                        f"{log_head}: committed records it will not produce",
                    ),
                    st.held.get(seq),
                )
            )
            for s in signed_beyond:
                st.signed.pop(s)
        if r.status == "unknown":
            for seq in [s for s in st.held if s > log_head]:
                del st.held[seq]
                out.spoofed += 1
        return out
