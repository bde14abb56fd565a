"""The hub on real sockets: oversized frames die at the hub, not at its subscribers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zmq

from fpmon.wire import Limits
from monitor.feed import Feed, Inbox
from replay import config
from replay.daemon import ReplayDaemon
from replay.fleet import ProverNode, daemon_doc, wait_subscribed
from replay.hub import Hub, HubConfig

pytestmark = pytest.mark.timeout(120)


def _heard(pred, node: ProverNode, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        node.telemetry()
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_an_oversized_frame_dies_at_the_hub_not_at_its_subscribers(tmp_path: Path) -> None:
    hub = Hub(HubConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0"))
    hub.start()
    node = ProverNode("n1", hub_xsub=hub.endpoints["xsub"])
    doc = daemon_doc(tmp_path, [node], replay={"hub": hub.endpoints["xpub"]})
    d = ReplayDaemon(config.parse(tmp_path / "replay.toml", doc))
    d.start()
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    inbox = Inbox()
    feed = Feed(inbox, [hub.endpoints["xpub"]])
    feed.start()
    attacker = zmq.Context.instance().socket(zmq.PUB)
    attacker.linger = 0
    attacker.connect(hub.endpoints["xsub"])
    try:
        wait_subscribed([node], d)
        assert _heard(lambda: any(getattr(m, "node", "") == "n1" for m in inbox.drain()), node, 10)
        time.sleep(0.3)  # the attacker's connection is up and has the subscriptions
        # One frame just over the wire limit: a SUB with ZMQ_MAXMSGSIZE drops its connection
        # on it as a protocol error, and libzmq never reconnects that connection.
        attacker.send_multipart([b"telemetry", b"\x00" * (Limits().max_bytes + 8192)])
        time.sleep(0.5)
        since = time.time()
        st = d.intake.stats["n1"]
        assert _heard(lambda: st.last_telemetry_t > since, node, 3.0), "the daemon went deaf"
        assert _heard(lambda: any(getattr(m, "t", 0) > since for m in inbox.drain()), node, 3.0)
    finally:
        attacker.close(0)
        feed.stop()
        d.stop()
        t.join(timeout=30)
        node.close()
        hub.stop()
