"""Verdicts and alerts are the verifier's word: the feed accepts only those signed with the
verifier's Ed25519 key, live or inside a StateReply, and counts what it drops."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon.monitor.feed import Feed, Inbox, Rejected
from fpmon.monitor.model import FleetModel
from fpmon.signing import public_bytes, sign
from fpmon.testing import synth
from fpmon.wire import Message, StateReply


def test_forged_verdicts_and_alerts_are_dropped_and_counted(collect):
    verifier, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    pub = synth.Publisher()
    inbox = Inbox()
    feed = Feed(inbox, [pub.endpoint], verifier_key=public_bytes(verifier))
    feed.start()
    try:
        collect(inbox, lambda g: (pub.send(synth.telemetry("honest")), any(
            getattr(x, "node", "") == "honest" for x in g))[1])  # fmt: skip
        for i in range(200):  # what flagged an honest demo node
            pub.send(synth.verdict("honest", i, "mismatch", "batch_size", 4))
        for i in range(20):
            pub.send(sign(stranger, synth.verdict("honest", 300 + i, "mismatch", "dtype", 1)))
        pub.send(synth.alert("honest", "mismatch", 1), sign(stranger, synth.alert("honest")))
        good = sign(verifier, synth.verdict("honest", 400, "match"))
        pub.send(type(good)(**{**good.to_map(), "status": "mismatch"}))  # a signature, other words
        pub.send(good, sign(verifier, synth.alert("honest", "shed", 2)))
        got = collect(inbox, lambda g: any(getattr(x, "seq", -1) == 2 for x in g))
    finally:
        feed.stop()
        pub.close()
    model = FleetModel()
    model.apply_many(x for x in got if isinstance(x, Message))
    row = model.nodes["honest"]
    assert row.health == "alert" and dict(row.verdicts) == {"match": 1}
    assert [e.alert.kind for e in model.alerts.values()] == ["shed"]
    reasons = [x.reason for x in got if isinstance(x, Rejected)]
    assert reasons.count("unsigned") == 201 and reasons.count("bad_signature") == 22


def test_state_reply_entries_and_the_reply_itself_must_be_signed(collect):
    verifier, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    good = sign(verifier, synth.verdict("n1", 1, "match"))
    forged = [
        synth.verdict("n1", 2, "mismatch", "dtype", "bfloat16"),
        sign(stranger, synth.verdict("n1", 3, "mismatch", "dtype", "bfloat16")),
    ]
    reply = StateReply(
        node="replay",
        t=time.time(),
        nodes={"n1": {"commits": 3}},
        verdicts=[good, *forged],
        alerts=[synth.alert("n1"), sign(verifier, synth.alert("n1", "shed"))],
    )
    for signer, accepted in ((verifier, True), (stranger, False), (None, False)):
        server = synth.StateServer(sign(signer, reply) if signer else reply)
        inbox = Inbox()
        feed = Feed(inbox, [], server.endpoint, verifier_key=public_bytes(verifier))
        feed.start()
        try:
            if accepted:
                got = collect(inbox, lambda g: any(isinstance(x, StateReply) for x in g))
                (state,) = [x for x in got if isinstance(x, StateReply)]
                assert [v.seq for v in state.verdicts] == [1]
                assert [a.kind for a in state.alerts] == ["shed"]
                reasons = sorted(x.reason for x in got if isinstance(x, Rejected))
                assert reasons == ["bad_signature", "unsigned", "unsigned"]
            else:
                want = "bad_signature" if signer else "unsigned"
                got = collect(inbox, lambda g, w=want: any(
                    isinstance(x, Rejected) and x.reason == w for x in g))  # fmt: skip
                assert not any(isinstance(x, StateReply) for x in got)
        finally:
            feed.stop()
            server.close()
