"""Chain checks: honest streams pass; gaps, reorders, forks, bad links and bad heads break."""

from __future__ import annotations

import os
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fpmon.chain import GENESIS, next_chain, sign_head
from fpmon.wire import Commit, Head
from replay.chains import ANCHORED, DUPLICATE, OK, ChainChecker

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def stream(n: int, node: str = "n1") -> list[Commit]:
    chain, out = GENESIS, []
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


def run(commits: list[Commit]) -> list:
    cc = ChainChecker({"n1": PUB})
    return [b for c in commits if (b := cc.on_commit(c)[1]) is not None]


def test_honest_stream_and_heads_pass() -> None:
    cc = ChainChecker({"n1": PUB})
    s = stream(50)
    for c in s:
        assert cc.on_commit(c) == (OK, None)
        assert cc.on_head(head(c)) is None


@pytest.mark.parametrize(
    ("order", "kind", "seq"),
    [
        ([0, 1, 3, 4], "gap", 3),
        ([0, 1, 3, 2, 4], "reorder", 2),
    ],
)
def test_gaps_and_reorders_break_at_once(order: list[int], kind: str, seq: int) -> None:
    s = stream(5)
    breaks = run([s[i] for i in order])
    assert (breaks[-1].kind, breaks[-1].seq) == (kind, seq)
    assert breaks[0].kind == "gap"  # the reorder first shows as the gap it leaves


def test_fork_and_bad_link() -> None:
    s = stream(4)
    other = Commit(**{**s[2].to_map(), "chain": os.urandom(32)})
    breaks = run([s[0], s[1], s[2], other])
    assert [b.kind for b in breaks] == ["fork"]
    forged = Commit(**{**s[1].to_map(), "record_digest": os.urandom(32)})
    breaks = run([s[0], forged, s[2]])
    assert breaks[0].kind == "bad_link" and breaks[0].seq == 1
    assert len(breaks) == 1  # re-anchored: seq 2 links to what was received


def test_duplicates_are_not_breaks_and_first_sight_anchors() -> None:
    s = stream(6)
    cc = ChainChecker({"n1": PUB})
    assert cc.on_commit(s[3])[0] == ANCHORED  # joined late: nothing to link to
    assert cc.on_commit(s[4]) == (OK, None)
    assert cc.on_commit(s[4])[0] == DUPLICATE


def test_heads_bad_signature_wrong_key_and_mismatch() -> None:
    s = stream(3)
    cc = ChainChecker({"n1": PUB})
    for c in s:
        cc.on_commit(c)
    h = head(s[2])
    bad = Head(**{**h.to_map(), "sig": bytes(64)})
    assert cc.on_head(bad).kind == "bad_signature"
    assert cc.on_head(head(s[2], Ed25519PrivateKey.generate())).kind == "wrong_key"
    assert cc.on_head(head(s[1], chain=s[2].chain)).kind == "head_mismatch"


def test_head_ahead_of_its_commit_is_checked_when_the_commit_arrives() -> None:
    s = stream(3)
    cc = ChainChecker({"n1": PUB})
    cc.on_commit(s[0])
    assert cc.on_head(head(s[1], chain=os.urandom(32))) is None  # cannot tell yet
    _outcome, brk = cc.on_commit(s[1])
    assert brk is not None and brk.kind == "head_mismatch"


def test_restore_continues_and_reanchors_after_own_downtime() -> None:
    s = stream(10)
    cc = ChainChecker({"n1": PUB})
    cc.restore("n1", 4, s[4].chain)
    assert cc.on_commit(s[5]) == (OK, None)
    cc2 = ChainChecker({"n1": PUB})
    cc2.restore("n1", 4, s[4].chain)
    assert cc2.on_commit(s[8])[0] == ANCHORED  # missed while down: not the node's fault
    assert cc2.on_commit(s[9]) == (OK, None)
