"""The state ROUTER at a bounded cost: a flood is rate-limited and counted while the daemon keeps
judging, absurd `since_verdicts` values are clamped, and with Curve only allowlisted monitors
get an answer."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import zmq
import zmq.auth

from fpmon.monitor.config import CurveConfig
from fpmon.monitor.feed import Feed, Inbox
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.fleet import ProverNode, daemon_doc, wait_subscribed, wait_verdicts
from fpmon.wire import StateReply, StateRequest, decode, encode

pytestmark = pytest.mark.timeout(120)


def start(tmp_path: Path, nodes: list[ProverNode], engine_factory, **sections: dict) -> tuple:
    doc = daemon_doc(tmp_path, nodes, **sections)
    d = ReplayDaemon(config.parse(tmp_path / "replay.toml", doc), engine_factory=engine_factory)
    d.start()
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    return d, t


def dealer(endpoint: str, keys: tuple[bytes, bytes, bytes] | None = None) -> zmq.Socket:
    s = zmq.Context.instance().socket(zmq.DEALER)
    s.linger = 0
    if keys:
        s.curve_serverkey, s.curve_publickey, s.curve_secretkey = keys
    s.connect(endpoint)
    return s


def ask(s: zmq.Socket, since: int = 0, timeout_ms: int = 2000) -> StateReply | None:
    try:
        # A DEALER whose Curve handshake was refused has no connection left: a blocking send
        # would never return.
        s.send_multipart(
            encode(StateRequest(node="mon", t=time.time(), since_verdicts=since)), zmq.NOBLOCK
        )
    except zmq.Again:
        return None
    if not s.poll(timeout_ms):
        return None
    reply = decode(s.recv_multipart(), expect=("state",))
    assert isinstance(reply, StateReply)
    return reply


def test_a_state_flood_is_rate_limited_while_the_daemon_keeps_judging(
    tmp_path: Path, tiny_engine, shared_engines
) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    commits = [node.make(e, e.encode(f"under a flood {i}")) for i in range(3)]
    d, t = start(tmp_path, [node], shared_engines)
    flooder = dealer(d.endpoints["state"])
    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        req = encode(StateRequest(node="flood", t=time.time()))
        while not stop.is_set():
            try:
                flooder.send_multipart(req, zmq.NOBLOCK)
                sent[0] += 1
            except zmq.Again:
                time.sleep(0.001)

    try:
        wait_subscribed([node], d)
        flood_thread = threading.Thread(target=flood, daemon=True)
        t0 = time.monotonic()
        flood_thread.start()
        for c in commits:
            node.publish(c)
        got = wait_verdicts(d.cfg.replay.store, 3, timeout=60)
        assert [v["status"] for v in got] == ["match"] * 3  # its real work, done
        time.sleep(0.5)
        stop.set()
        flood_thread.join(5)
        elapsed = time.monotonic() - t0
        replies = 0
        while flooder.poll(200):
            flooder.recv_multipart()
            replies += 1
        lim = d.cfg.limits
        assert replies <= lim.state_burst + lim.state_rate_per_s * elapsed + 1, (replies, elapsed)
        limited = d.state_rejects["rate_limited"]
        assert limited >= 500 and limited + replies <= sent[0], (limited, replies, sent[0])
        # Another monitor, once the flood is over, is answered. A `since_verdicts` beyond int64
        # (what SQLite can hold) or below 0 is refused at the wire boundary and counted; the
        # largest valid one asks for nothing newer. None of it kills the daemon.
        time.sleep(1.0)
        other = dealer(d.endpoints["state"])
        schema = d.state_rejects["schema"]
        assert ask(other, since=2**64 - 1, timeout_ms=500) is None
        assert ask(other, since=-5, timeout_ms=500) is None
        assert d.state_rejects["schema"] == schema + 2
        reply = ask(other, since=2**63 - 1)
        assert reply is not None and reply.verdicts == [] and reply.nodes["n1"].commits == 3
        reply = ask(other, since=0)
        assert reply is not None and len(reply.verdicts) == 3
        assert t.is_alive()
        other.close()
    finally:
        stop.set()
        flooder.close()
        d.stop()
        t.join(timeout=30)
        node.close()


def test_with_curve_only_allowlisted_monitors_get_state(
    tmp_path: Path, curve_cert, shared_engines, collect
) -> None:
    node = ProverNode("n1")
    for who in ("daemon", "mon", "stranger"):
        curve_cert(str(tmp_path), who)
    (tmp_path / "monitors").mkdir()
    (tmp_path / "mon.key").rename(tmp_path / "monitors" / "mon.key")
    d, t = start(
        tmp_path,
        [node],
        shared_engines,
        replay={
            "curve_secret_file": str(tmp_path / "daemon.key_secret"),
            "state_clients_dir": str(tmp_path / "monitors"),
        },
    )
    server, _ = zmq.auth.load_certificate(str(tmp_path / "daemon.key_secret"))
    stranger = zmq.auth.load_certificate(str(tmp_path / "stranger.key_secret"))
    socks = [
        dealer(d.endpoints["state"]),  # plain: no Curve handshake at all
        dealer(d.endpoints["state"], (server, *stranger)),  # Curve, but not allowlisted
    ]
    try:
        for s in socks:
            assert ask(s, timeout_ms=1500) is None
        # The monitor's own config: the hub's key for its SUB, the daemon's for state.
        hub_key, _ = zmq.curve_keypair()
        curve = CurveConfig(
            server_key=hub_key, client_keys=tmp_path / "mon.key_secret", state_server_key=server
        )
        inbox = Inbox()
        feed = Feed(inbox, [], d.endpoints["state"], curve=curve, verifier_key=d.verifier_public)
        feed.start()
        try:
            got = collect(inbox, lambda g: any(isinstance(x, StateReply) for x in g))
        finally:
            feed.stop()
        (reply,) = [x for x in got if isinstance(x, StateReply)]
        assert "n1" in reply.nodes
    finally:
        for s in socks:
            s.close()
        d.stop()
        t.join(timeout=30)
        node.close()
