"""Session over real sockets: envelopes, counted rejects, Curve pinning, admission."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest
import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from fpmon.errors import FpmonError
from fpmon.session import CurveClient, CurveServer, Session
from fpmon.wire import Limits, OpenReply, OpenRequest, WireError, encode
from fpmon.wire.codec import FRAME_SLACK, RejectCounter

WAIT_MS = 2000  # generous: loopback answers in microseconds, a loaded CI box in more
Pair = Callable[..., tuple[Session, Session]]


def request(seq: int = 1) -> OpenRequest:
    return OpenRequest(node="v", t=1.0, seq=seq, nonce=b"n" * 16)


def reply(seq: int = 1) -> OpenReply:
    return OpenReply(node="a", t=2.0, seq=seq, nonce=b"n" * 16, status="unknown")


def test_router_dealer_round_trip_keeps_the_envelope(session_pair: Pair) -> None:
    srv, cli = session_pair(zmq.ROUTER, zmq.DEALER)
    assert cli.send(request())
    got = srv.recv(WAIT_MS)
    assert got is not None and got.msg == request() and got.error is None
    assert len(got.envelope) == 1 and got.body == encode(request())
    assert srv.send(reply(), got.envelope)
    back = cli.recv(WAIT_MS)
    assert back is not None and back.msg == reply() and back.envelope == []
    assert not srv.rejects and not cli.rejects


def test_req_router_round_trip_with_delimiter(session_pair: Pair) -> None:
    srv, cli = session_pair(zmq.ROUTER, zmq.REQ)
    assert cli.send(request(7))
    got = srv.recv(WAIT_MS)
    assert got is not None and got.msg == request(7)
    assert len(got.envelope) == 2 and got.envelope[1] == b""  # REQ's empty delimiter
    assert srv.send(reply(7), got.envelope)
    back = cli.recv(WAIT_MS)
    assert back is not None and back.msg == reply(7)


def test_recv_returns_none_when_nothing_came(session_pair: Pair) -> None:
    srv, _ = session_pair(zmq.ROUTER, zmq.DEALER)
    assert srv.recv() is None
    assert srv.recv(20) is None


def test_each_bad_frame_is_counted_and_the_next_good_one_arrives(
    zmq_ctx: zmq.Context[Any],
) -> None:
    limits = Limits(max_bytes=1024)
    srv = Session(zmq_ctx, zmq.ROUTER, limits=limits, expect=(OpenRequest.TOPIC,))
    ep = srv.bind("tcp://127.0.0.1:0", "[test] server")
    peer = zmq_ctx.socket(zmq.DEALER)  # a raw socket: the hostile peer writes any frames
    peer.linger = 0
    peer.connect(ep)
    topic, good = encode(request())
    bad = [
        ([topic, b"x" * 2000], "oversized"),  # over the limit, under the socket's hard cap
        ([b"verdict", good], "unknown_topic"),  # a real topic, not accepted here
        ([b"nonsense", good], "unknown_topic"),
        ([topic, b"\xc1"], "malformed"),  # a byte msgpack never uses
        ([topic, msgpack.packb({"node": 1})], "schema"),
        ([topic, good, b"extra"], "frame_count"),
        ([topic], "frame_count"),
    ]
    for frames, _ in bad:
        peer.send_multipart(frames)
    peer.send_multipart(encode(request(2)))
    seen = []
    for _ in bad:
        got = srv.recv(WAIT_MS)
        assert got is not None and got.msg is None and got.error is not None
        assert len(got.envelope) == 1  # still answerable
        seen.append(got.error.reason)
    assert seen == [why for _, why in bad]
    good_one = srv.recv(WAIT_MS)
    assert good_one is not None and good_one.msg == request(2)
    assert srv.rejects == {
        "oversized": 1,
        "unknown_topic": 2,
        "malformed": 1,
        "schema": 1,
        "frame_count": 2,
    }


def test_the_hard_cap_sits_a_frame_slack_above_the_limit(zmq_ctx: zmq.Context[Any]) -> None:
    s = Session(zmq_ctx, zmq.SUB, limits=Limits(max_bytes=1000))
    assert s.socket.maxmsgsize == 1000 + FRAME_SLACK and s.socket.linger == 0
    t = Session(zmq_ctx, zmq.ROUTER, max_frame_bytes=64 * 1024, linger=5)
    assert t.socket.maxmsgsize == 64 * 1024 and t.socket.linger == 5


def test_rejects_shared_between_sessions_and_counted_by_policy(
    zmq_ctx: zmq.Context[Any],
) -> None:
    shared = RejectCounter()
    a = Session(zmq_ctx, zmq.DEALER, rejects=shared)
    b = Session(zmq_ctx, zmq.DEALER, rejects=shared)
    assert a.reject(WireError("bad_max_tokens", "0")) == 1
    assert b.reject(WireError("bad_max_tokens", "0")) == 2
    assert shared.snapshot() == {"bad_max_tokens": 2}


def test_unconnected_dealer_with_immediate_does_not_take_a_message(
    zmq_ctx: zmq.Context[Any],
) -> None:
    s = Session(zmq_ctx, zmq.DEALER)
    s.socket.immediate = True
    s.connect("tcp://127.0.0.1:1")  # nothing listens there
    assert not s.send(request(), block=False)


def test_bind_failure_names_the_config_key(session_pair: Pair, zmq_ctx: zmq.Context[Any]) -> None:
    srv, _ = session_pair(zmq.ROUTER, zmq.DEALER)
    taken = srv.socket.last_endpoint.decode()
    other = Session(zmq_ctx, zmq.ROUTER)
    with pytest.raises(FpmonError, match=r"\[endpoints\] intake"):
        other.bind(taken, "[endpoints] intake")


def test_admit_refuses_a_peer_before_decoding(zmq_ctx: zmq.Context[Any]) -> None:
    peers: list[bytes] = []

    def once_each(peer: bytes) -> str | None:
        peers.append(peer)
        return "rate_limited" if peers.count(peer) > 1 else None

    srv = Session(zmq_ctx, zmq.ROUTER, admit=once_each)
    ep = srv.bind("tcp://127.0.0.1:0", "[test] state")
    cli = Session(zmq_ctx, zmq.DEALER)
    cli.connect(ep)
    cli.send(request(1))
    cli.forward([b"garbage"])  # refused before decoding: rate_limited, not frame_count
    first, second = srv.recv(WAIT_MS), srv.recv(WAIT_MS)
    assert first is not None and first.msg == request(1)
    assert second is not None and second.error is not None
    assert second.error.reason == "rate_limited"
    assert srv.rejects == {"rate_limited": 1}
    assert peers[0] == first.envelope[0]  # without Curve the peer is its routing id


@pytest.fixture
def curve_server(zmq_ctx: zmq.Context[Any]) -> Iterator[tuple[Session, bytes]]:
    """A Curve ROUTER whose ZAP domain `test` admits any client key; its public key."""
    if not zmq.has("curve"):
        pytest.skip("libzmq without CURVE")
    auth = ThreadAuthenticator(zmq_ctx)
    auth.start()
    auth.configure_curve(domain="test", location=zmq.auth.CURVE_ALLOW_ANY)
    public, secret = zmq.curve_keypair()
    srv = Session(zmq_ctx, zmq.ROUTER, security=CurveServer(public, secret, "test"))
    srv.bind("tcp://127.0.0.1:0", "[test] curve")
    yield srv, public
    srv.close()
    auth.stop()


def test_curve_client_pinning_the_server_key_gets_through(
    zmq_ctx: zmq.Context[Any], curve_server: tuple[Session, bytes]
) -> None:
    srv, server_key = curve_server
    public, secret = zmq.curve_keypair()
    cli = Session(zmq_ctx, zmq.DEALER, security=CurveClient(server_key, public, secret))
    cli.connect(srv.socket.last_endpoint.decode())
    assert cli.send(request(3))
    got = srv.recv(WAIT_MS)
    assert got is not None and got.msg == request(3)
    assert got.user_id == public.decode() and got.peer == public  # ZAP's User-Id
    srv.send(reply(3), got.envelope)
    back = cli.recv(WAIT_MS)
    assert back is not None and back.msg == reply(3)


def test_curve_client_with_the_wrong_server_key_never_gets_through(
    zmq_ctx: zmq.Context[Any], curve_server: tuple[Session, bytes]
) -> None:
    srv, server_key = curve_server
    ep = srv.socket.last_endpoint.decode()
    wrong_key, _ = zmq.curve_keypair()
    public, secret = zmq.curve_keypair()
    liar = Session(zmq_ctx, zmq.DEALER, security=CurveClient(wrong_key, public, secret))
    liar.connect(ep)
    assert liar.send(request(66))  # queued: the handshake is what fails
    honest = Session(zmq_ctx, zmq.DEALER, security=CurveClient(server_key, public, secret))
    honest.connect(ep)
    honest.send(request(1))
    got = srv.recv(WAIT_MS)
    assert got is not None and got.msg == request(1)
    assert srv.recv(300) is None  # the wrong-key client's request never arrives
    assert not srv.rejects
