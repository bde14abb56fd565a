"""Chain state: honest streams pass; holes are held and repaired from the node's own signed
log; only what the node signed can break its chain; unsigned contradictions are spoofing."""

from __future__ import annotations

import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fpmon.chain import GENESIS, next_chain, sign_head
from fpmon.replay.chains import DUPLICATE, HELD, SPOOFED, ChainChecker
from fpmon.wire import Commit, Head, Link, LinksReply

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def stream(n: int, node: str = "n1", start: bytes = GENESIS) -> list[Commit]:
    chain, out = start, []
    for seq in range(n):
        d = os.urandom(32)
        chain = next_chain(chain, d)
        out.append(
            Commit(
                node=node,
                t=time.time(),
                seq=seq,
                request_id=str(seq),
                record_digest=d,
                chain=chain,
                setup={},
                model="tiny",
                prompt_tokens=1,
                output_tokens=1,
            )
        )
    return out


def head(c: Commit, key: Ed25519PrivateKey = KEY, chain: bytes | None = None) -> Head:
    ch = c.chain if chain is None else chain
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return Head(
        node=c.node, t=0.0, seq=c.seq, chain=ch, sig=sign_head(key, c.node, c.seq, ch), pubkey=pub
    )


def links(s: list[Commit], first: int, last: int, key: Ed25519PrivateKey = KEY) -> LinksReply:
    """The node's answer from its log: positions first..last, signed over the last."""
    seg = [Link(seq=c.seq, record_digest=c.record_digest, chain=c.chain, commit=c) for c in s]
    seg = seg[first : last + 1]
    return LinksReply(
        node="n1",
        t=0.0,
        nonce=b"n",
        first=first,
        status="ok",
        links=seg,
        head=head(s[last], key),
        log_head=len(s) - 1,
    )


def anchored(s: list[Commit]) -> ChainChecker:
    cc = ChainChecker({"n1": PUB})
    cc.on_commit(s[0])
    cc.on_head(head(s[0]))
    return cc


def seqs(res) -> list[int]:
    return [c.seq for c in res.accepted]


def test_honest_stream_and_heads_pass() -> None:
    s = stream(50)
    cc = ChainChecker({"n1": PUB})
    assert seqs(cc.on_commit(s[0])) == [0]  # seq 0 links to the known genesis
    for c in s[1:]:
        r = cc.on_commit(c)
        assert seqs(r) == [c.seq] and not r.breaks and not r.spoofed
        assert not cc.on_head(head(c)).breaks
    assert cc.nodes["n1"].wanted() is None


def test_a_hole_is_held_and_repaired_from_the_nodes_log_not_accused() -> None:
    s = stream(10)
    cc = anchored(s)
    cc.on_commit(s[1])
    for c in s[5:]:  # 2..4 lost in a hub restart
        r = cc.on_commit(c)
        assert r.outcome == HELD and not r.breaks
    assert cc.nodes["n1"].wanted() == (2, 9)
    r = cc.on_links("n1", links(s, 2, 4))
    assert seqs(r) == [2, 3, 4, 5, 6, 7, 8, 9] and not r.breaks and not r.spoofed
    assert cc.nodes["n1"].wanted() is None


def test_first_sight_mid_stream_is_held_until_a_signed_head() -> None:
    s = stream(10)
    cc = ChainChecker({"n1": PUB})
    assert cc.on_commit(s[4]).outcome == HELD  # nothing verified yet: held, not judged
    assert seqs(cc.on_head(head(s[4]))) == [4]  # the first signed head anchors it
    assert seqs(cc.on_commit(s[5])) == [5]


def test_first_sight_anchors_on_a_signed_segment() -> None:
    """A daemon that starts (or restarts with no state) mid-stream verifies from the log."""
    s = stream(20)
    cc = ChainChecker({"n1": PUB})
    for c in s[7:12]:
        assert cc.on_commit(c).outcome == HELD
    assert cc.nodes["n1"].wanted() == (7, 11)
    assert seqs(cc.on_links("n1", links(s, 7, 11))) == [7, 8, 9, 10, 11]


def test_restart_repairs_what_was_committed_during_the_outage() -> None:
    s = stream(30)
    cc = ChainChecker({"n1": PUB})
    cc.restore("n1", 9, s[9].chain)  # this daemon's own state when it went down
    assert cc.on_commit(s[20]).outcome == HELD  # 10..19 committed while it was down
    assert cc.nodes["n1"].wanted() == (10, 20)
    r = cc.on_links("n1", links(s, 10, 20))
    assert seqs(r) == list(range(10, 21)) and not r.breaks


def test_forged_seq_jump_under_another_name_is_spoofing_not_a_break() -> None:
    """The red team's attack: a commit at seq 10^9 under a victim's name. It is held until the
    victim's own log answers; the victim's log ends far below, so it is dropped as spoofed and
    the victim's real commits go on verifying."""
    s = stream(10)
    cc = anchored(s)
    forged = Commit(**{**s[1].to_map(), "seq": 10**9})
    assert cc.on_commit(forged).outcome == HELD
    for c in s[1:6]:
        r = cc.on_commit(c)
        assert seqs(r) == [c.seq] and not r.breaks
    denied = LinksReply(
        node="n1", t=0.0, nonce=b"n", first=6, status="unknown", log_head=5, reason="no record"
    )
    r = cc.on_links("n1", denied)
    assert r.spoofed == 1 and not r.breaks
    assert cc.nodes["n1"].wanted() is None


def test_a_gap_the_node_signed_and_then_denies_breaks_its_chain() -> None:
    s = stream(10)
    cc = anchored(s)
    cc.on_head(head(s[6]))  # the node signs its chain at 6 ...
    assert cc.nodes["n1"].wanted() == (1, 6)
    denied = LinksReply(
        node="n1", t=0.0, nonce=b"n", first=1, status="unknown", log_head=0, reason="no record"
    )
    r = cc.on_links("n1", denied)  # ... and then says its log ends at 0
    assert [b.kind for b, _ in r.breaks] == ["gap"] and r.breaks[0][0].seq == 6


def test_unsigned_contradictions_are_spoofing_and_signed_ones_are_forks() -> None:
    s = stream(6)
    cc = anchored(s)
    for c in s[1:4]:
        cc.on_commit(c)
    other = stream(6)  # someone else's chain under n1's name
    r = cc.on_commit(Commit(**{**other[2].to_map()}))
    assert r.outcome == SPOOFED and not r.breaks
    assert cc.on_commit(s[2]).outcome == DUPLICATE
    stranger = Ed25519PrivateKey.generate()
    assert cc.on_head(head(other[2], key=stranger)).outcome == SPOOFED  # not n1's key
    r = cc.on_head(head(s[2], chain=other[2].chain))  # n1's key signs another chain at 2
    assert [b.kind for b, _ in r.breaks] == ["fork"]


def test_a_commit_that_does_not_link_waits_for_the_log() -> None:
    s = stream(6)
    cc = anchored(s)
    bad = Commit(**{**s[1].to_map(), "chain": os.urandom(32)})
    assert cc.on_commit(bad).outcome == HELD  # not accepted: a spoofer could have sent it
    assert seqs(cc.on_commit(s[1])) == [1]  # the real one links; the impostor is spent
    assert cc.on_commit(s[2]).spoofed == 0


def test_a_signed_segment_that_does_not_continue_the_chain_is_a_bad_link() -> None:
    s = stream(8)
    cc = anchored(s)
    cc.on_commit(s[1])
    cc.on_commit(s[5])
    rewritten = stream(8)  # the node's log now holds another history after seq 1
    r = cc.on_links("n1", links(rewritten, 2, 4))
    assert [b.kind for b, _ in r.breaks] == ["bad_link"]


def test_links_not_signed_by_the_node_are_refused() -> None:
    s = stream(8)
    cc = anchored(s)
    cc.on_commit(s[4])
    r = cc.on_links("n1", links(s, 1, 3, key=Ed25519PrivateKey.generate()))
    assert r.outcome == SPOOFED and not r.accepted and cc.nodes["n1"].wanted() == (1, 4)


def test_held_commits_are_bounded() -> None:
    from fpmon.replay.chains import MAX_HELD

    s = stream(3)
    cc = anchored(s)
    spam = [Commit(**{**s[1].to_map(), "seq": 100 + i}) for i in range(MAX_HELD + 10)]
    dropped = sum(cc.on_commit(c).spoofed for c in spam)
    assert dropped == 10 and len(cc.nodes["n1"].held) == MAX_HELD
