"""The repairer asks the node's log for what the feed lost, backs off, and warns (never
accuses) when a node leaves a hole unanswered."""

from __future__ import annotations

import os

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fpmon.chain import GENESIS, next_chain, sign_head
from fpmon.replay.chains import ChainChecker
from fpmon.replay.repair import SETTLE_S, Repairer
from fpmon.wire import Commit, Head, Link, LinksReply, LinksRequest

KEY = Ed25519PrivateKey.generate()
PUB = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def stream(n: int) -> list[Commit]:
    chain, out = GENESIS, []
    for seq in range(n):
        d = os.urandom(32)
        chain = next_chain(chain, d)
        out.append(
            Commit(node="n1", t=1.0, seq=seq, request_id=str(seq), record_digest=d, chain=chain,
                   setup={}, model="tiny", prompt_tokens=1, output_tokens=1)
        )  # fmt: skip
    return out


def answer(req: LinksRequest, s: list[Commit]) -> LinksReply:
    seg = s[req.first : req.first + req.count]
    links = [Link(seq=c.seq, record_digest=c.record_digest, chain=c.chain, commit=c) for c in seg]
    last = seg[-1]
    head = Head(node="n1", t=1.0, seq=last.seq, chain=last.chain,
                sig=sign_head(KEY, "n1", last.seq, last.chain), pubkey=PUB)  # fmt: skip
    return LinksReply(node="n1", t=1.0, nonce=req.nonce, first=req.first, status="ok",
                      links=links, head=head, log_head=len(s) - 1)  # fmt: skip


def test_a_hole_is_asked_for_after_settling_and_filled() -> None:
    s = stream(8)
    cc = ChainChecker({"n1": PUB})
    sent: list[LinksRequest] = []
    rep = Repairer(cc, lambda node, m: sent.append(m) or True, "v", retry_s=1.0, timeout_s=30)
    for c in (s[0], s[1], s[5], s[6], s[7]):
        cc.on_commit(c)
    assert rep.tick(now=100.0) == [] and sent == []  # may still arrive from the feed
    rep.tick(now=100.0 + SETTLE_S)
    assert [(m.first, m.count) for m in sent] == [(2, 6)]
    res = rep.on_reply("n1", answer(sent[0], s))
    assert res is not None and [c.seq for c in res.accepted] == [2, 3, 4, 5, 6, 7]
    assert cc.nodes["n1"].wanted() is None


def test_silence_backs_off_and_warns_once_without_accusing() -> None:
    s = stream(6)
    cc = ChainChecker({"n1": PUB})
    sent: list[LinksRequest] = []
    rep = Repairer(cc, lambda node, m: sent.append(m) or True, "v", retry_s=1.0, timeout_s=10)
    cc.on_commit(s[0])
    cc.on_commit(s[4])
    warnings = []
    for i in range(60):
        warnings += rep.tick(now=200.0 + i)
    assert len(warnings) == 1 and (warnings[0].first, warnings[0].last) == (1, 4)
    # Asked again at 1, 2, 4, 8, 16, 16 s intervals: kept asking, never a busy loop.
    assert 5 <= len(sent) <= 8, len(sent)


def test_unsolicited_and_forged_replies_are_counted_and_ignored() -> None:
    s = stream(6)
    cc = ChainChecker({"n1": PUB})
    sent: list[LinksRequest] = []
    rep = Repairer(cc, lambda node, m: sent.append(m) or True, "v")
    cc.on_commit(s[0])
    cc.on_commit(s[3])
    rep.tick(now=1.0)
    rep.tick(now=1.0 + SETTLE_S)
    stale = LinksRequest(node="v", t=1.0, first=1, count=2, nonce=b"not-ours")
    assert rep.on_reply("n1", answer(stale, s)) is None and rep.unsolicited == 1
    assert cc.nodes["n1"].wanted() == (1, 3)
