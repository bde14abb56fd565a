"""The replay daemon signs what it says; a monitor pinning its key accepts it, live and in state."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from fpmon import signing
from fpmon.monitor.feed import Feed, Inbox, Rejected
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.fleet import ProverNode, daemon_doc, wait_subscribed
from fpmon.wire import Alert, StateReply, Verdict, encode

pytestmark = pytest.mark.timeout(120)


def test_verdicts_alerts_and_state_are_signed_with_the_verifier_key(
    tmp_path: Path, tiny_engine, shared_engines, collect
) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    commit = node.make(e, e.encode("signed"))
    doc = daemon_doc(tmp_path, [node], replay={"signing_key_file": "keys/verifier.key"})
    d = ReplayDaemon(config.parse(tmp_path / "replay.toml", doc), engine_factory=shared_engines)
    key_file = tmp_path / "keys" / "verifier.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    pub_hex = (tmp_path / "keys" / "verifier.key.pub").read_text().strip()
    assert bytes.fromhex(pub_hex) == d.verifier_public
    d.start()
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    inbox = Inbox()
    feed = Feed(inbox, [d.endpoints["publish"]], verifier_key=d.verifier_public)
    feed.start()
    try:
        wait_subscribed([node], d)
        got: list = []

        def heard_verdict(g: list) -> bool:
            if not any(isinstance(x, Verdict) for x in g):
                node.publish(commit)  # slow joiner: the node republishes until we hear one
            return any(isinstance(x, Verdict) for x in g)

        got = collect(inbox, heard_verdict, timeout=60)
        (v,) = [x for x in got if isinstance(x, Verdict)]
        assert v.status == "match" and v.sig
        h = node.head_for(commit)  # a bad head for a judged seq: an alert, signed as well
        node.pub.send_multipart(encode(type(h)(**{**h.to_map(), "sig": bytes(64)})))
        got = collect(inbox, lambda g: any(isinstance(x, Alert) for x in g), timeout=20)
        assert [a.kind for a in got if isinstance(a, Alert)] == ["spoofed"]
        later = Inbox()
        state = Feed(later, [], d.endpoints["state"], verifier_key=d.verifier_public)
        state.start()
        try:
            got = collect(later, lambda g: any(isinstance(x, StateReply) for x in g))
        finally:
            state.stop()
        (reply,) = [x for x in got if isinstance(x, StateReply)]
        assert [m.seq for m in reply.verdicts] == [0] and reply.sig
        assert [m.kind for m in reply.alerts] == ["spoofed"]
        assert not any(isinstance(x, Rejected) for x in got)
        assert signing.check(signing.public_key(d.verifier_public), reply) is None
    finally:
        feed.stop()
        d.stop()
        t.join(timeout=30)
        node.close()
