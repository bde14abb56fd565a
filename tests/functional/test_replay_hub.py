"""The hub on real sockets: oversized frames die at the hub, not at its subscribers."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest
import zmq

from fpmon.monitor.feed import Feed, Inbox
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.replay.hub import ForwarderConfig, Hub, HubConfig, HubCurveConfig
from fpmon.testing.drills.fuzz import RawZmtp
from fpmon.testing.fleet import ProverNode, daemon_doc, wait_subscribed
from fpmon.wire import HostSample, Limits, Telemetry, decode, encode

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
    hub = Hub(HubConfig(hub=ForwarderConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0")))
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


def _certs(curve_cert, tmp: Path, names: tuple[str, ...]) -> dict[str, tuple[bytes, bytes]]:
    import zmq.auth

    out = {}
    for n in names:
        _, secret = curve_cert(str(tmp), n)
        out[n] = zmq.auth.load_certificate(secret)
    return out


def _allow(tmp: Path, folder: str, names: tuple[str, ...]) -> Path:
    import shutil

    d = tmp / folder
    d.mkdir()
    for n in names:
        shutil.copy(tmp / f"{n}.key", d / f"{n}.key")
    return d


def test_curve_hub_binds_each_key_to_its_node_and_verdicts_to_the_verifier(
    tmp_path: Path, curve_cert
) -> None:
    import msgpack

    from fpmon import canonical
    from fpmon.testing import synth

    keys = _certs(curve_cert, tmp_path, ("hub", "replay", "h0", "h1", "mon"))
    hub = Hub(
        HubConfig(
            hub=ForwarderConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0"),
            curve=HubCurveConfig(
                secret_file=tmp_path / "hub.key_secret",
                publishers_dir=_allow(tmp_path, "pubs", ("replay", "h0", "h1")),
                subscribers_dir=_allow(tmp_path, "subs", ("mon",)),
                verifiers=("replay",),
            ),
        )
    )
    hub.start()
    ctx = zmq.Context.instance()
    server = keys["hub"][0]

    def client(kind: int, who: str) -> zmq.Socket:
        s = ctx.socket(kind)
        s.linger = 0
        s.curve_serverkey, (s.curve_publickey, s.curve_secretkey) = server, keys[who]
        return s

    pubs = {who: client(zmq.PUB, who) for who in ("replay", "h0", "h1")}
    for s in pubs.values():
        s.connect(hub.endpoints["xsub"])
    sub = client(zmq.SUB, "mon")
    for topic in (b"commit", b"head", b"telemetry", b"verdict", b"alert", b"zzz"):
        sub.subscribe(topic)  # subscriptions still flow XPUB -> XSUB through the hub
    sub.connect(hub.endpoints["xpub"])
    got: list = []

    def pump(until, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if sub.poll(50):
                got.append(decode(sub.recv_multipart()))
            if until():
                return True
        return False

    def tele(node: str, marker: str = "") -> list[bytes]:
        host = HostSample(note=marker)
        return encode(Telemetry(node=node, t=time.time(), host=host, source="host"))

    try:
        assert pump(lambda: (pubs["h0"].send_multipart(tele("h0")), len(got) > 0)[1])
        m = Telemetry(node="h1", t=1.0).to_map()
        body = canonical.pack(m)  # a fixmap: its first byte holds the entry count
        dup = bytes([0x80 | len(m) + 1]) + body[1:] + msgpack.packb("node") + msgpack.packb("h0")
        forged = [
            ("h1", tele("h0")),  # another node's name
            ("h1", encode(synth.commit("h0", 7))),
            (
                "h0",
                encode(synth.verdict("h1", 3, "mismatch", "dtype", "bfloat16")),
            ),  # a node posing as verifier
            ("h0", encode(synth.alert("h1", "mismatch", 3))),
            ("replay", encode(synth.commit("replay", 1))),  # the verifier posing as a node
            ("h0", [b"telemetry", dup]),  # a first-key-wins reader would see "h1"
            ("h0", [b"commit", b"\xc1"]),
            ("h0", [b"commit", msgpack.packb({"node": 5})]),
            ("h0", [b"zzz", tele("h0")[1]]),
            ("h0", [*tele("h0"), b"extra"]),
        ]
        for who, frames in forged:
            pubs[who].send_multipart(frames)
        time.sleep(0.3)
        pubs["h0"].send_multipart(tele("h0", "end"))
        pubs["h1"].send_multipart(tele("h1", "end"))
        pubs["replay"].send_multipart(encode(synth.verdict("h1", 3, "match")))

        def ends() -> set[tuple[str, str]]:
            marked = {(m.TOPIC, m.node) for m in got if _note(m) == "end"}
            return marked | {(m.TOPIC, m.node) for m in got if m.TOPIC == "verdict"}

        want = {("telemetry", "h0"), ("telemetry", "h1"), ("verdict", "h1")}
        assert pump(lambda: ends() >= want), ends()
        time.sleep(0.2)
        pump(lambda: False, timeout=0.2)
        assert all(m.TOPIC == "telemetry" or m.status == "match" for m in got), got
        assert {m.node for m in got if m.TOPIC == "telemetry"} == {"h0", "h1"}
        assert sum(_note(m) == "end" for m in got) == 2
        stats = hub.stats()
        # Unsubscriptions are never passed upstream (a forged one silenced publishers): the
        # ones this test's own subscriber churn produces are counted, not forwarded.
        dropped = {k: v for k, v in stats["dropped"].items() if k != "unsubscribe"}
        assert dropped == {
            "wrong_node": 2,
            "not_verifier": 2,
            "not_a_node": 1,
            "duplicate_key": 1,
            "malformed": 1,
            "schema": 1,
            # The subscription to "zzz" is refused at the hub, so no publisher sends it there.
            "subscription_topic": 1,
            "frame_count": 1,
        }, stats
        assert stats["forwarded"] == len(got)
    finally:
        for s in (*pubs.values(), sub):
            s.close(0)
        hub.stop()


def _note(m: object) -> str:
    return m.host.note if isinstance(m, Telemetry) else ""


def test_huge_subscription_frames_cost_their_sender_the_connection_not_the_hub() -> None:
    # Reported by the socket fuzz on an earlier build: subscription frames of ~200 KB and more,
    # then a disconnect, crashed the hub in libzmq (SIGSEGV freeing its subscription tree).
    hub = Hub(HubConfig(hub=ForwarderConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0")))
    hub.start()
    node = ProverNode("n1", hub_xsub=hub.endpoints["xsub"])
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    try:
        for size in (200_000, 1 << 20, 5 << 20) * 4:
            raw = RawZmtp(hub.endpoints["xpub"], b"XSUB", 5.0)
            with contextlib.suppress(OSError):  # the hub may drop us mid-frame
                raw.send_multipart([b"\x01telemetry" + b"x" * size])
            raw.close()
        sub.subscribe(b"telemetry")
        sub.connect(hub.endpoints["xpub"])
        deadline = time.monotonic() + 10
        got = False
        while not got and time.monotonic() < deadline:
            node.telemetry()
            got = bool(sub.poll(100))
        assert got, "after huge subscriptions a new subscriber hears nothing through the hub"
        assert decode(sub.recv_multipart()).TOPIC == "telemetry"
    finally:
        sub.close(0)
        node.close()
        hub.stop()
