"""Deafness: a SUB whose connection died (an oversized frame from a direct publisher is enough)
hears nothing ever again; the daemon notices the silence, alerts `deaf` and resubscribes."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.fleet import ProverNode, daemon_doc, wait_subscribed
from fpmon.wire import Limits

pytestmark = pytest.mark.timeout(120)


def test_a_deaf_subscription_is_an_alert_and_is_recreated(tmp_path: Path, wait_alert) -> None:
    node = ProverNode("n1")
    doc = daemon_doc(tmp_path, [node], limits={"deaf_after_s": 1.0})
    d = ReplayDaemon(config.parse(tmp_path / "replay.toml", doc))
    d.start()
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    stop = threading.Event()

    def beat() -> None:  # an agent's periodic telemetry
        while not stop.wait(0.2):
            node.telemetry()

    try:
        wait_subscribed([node], d)
        # The node itself sends one frame over the daemon's limit: libzmq drops the SUB's
        # connection as a protocol error and never reconnects it.
        node.pub.send_multipart([b"telemetry", b"\x00" * (Limits().max_bytes + 8192)])
        time.sleep(0.3)
        threading.Thread(target=beat, daemon=True).start()
        deaf = wait_alert(d, "deaf", timeout=15)
        assert deaf["node"] == "n1" and deaf["details"]["silent_s"] >= 1.0
        since = time.time()
        deadline = time.monotonic() + 10
        while d.intake.stats["n1"].last_telemetry_t <= since and time.monotonic() < deadline:
            time.sleep(0.05)
        assert d.intake.stats["n1"].last_telemetry_t > since, "still deaf after resubscribing"
    finally:
        stop.set()
        d.stop()
        t.join(timeout=30)
        node.close()
