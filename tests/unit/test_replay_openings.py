"""Openings over a real DEALER/ROUTER pair: outcomes, nonce matching, budget without a peer."""

from __future__ import annotations

import time

import zmq

from fpmon.canonical import digest
from fpmon.wire import Commit, Limits, OpenReply, decode, encode
from replay.openings import Opener

RECORD = b"record bytes as committed"


def commit(seq: int) -> Commit:
    return Commit(
        node="n1",
        t=1.0,
        seq=seq,
        request_id=str(seq),
        record_digest=digest(RECORD),
        chain=b"c" * 32,
        setup={},
        model="tiny",
        prompt_tokens=1,
        output_tokens=1,
    )


def pump(opener: Opener, want: int, timeout: float = 5.0) -> list:
    out: list = []
    deadline = time.monotonic() + timeout
    sock = opener.sockets["n1"]
    while len(out) < want and time.monotonic() < deadline:
        if sock.poll(50):
            out += opener.on_readable(sock)
        out += opener.tick()
    return out


def test_outcomes_by_reply() -> None:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    opener = Opener(
        ctx,
        {"n1": f"tcp://127.0.0.1:{port}"},
        verifier="v",
        deadline_s=2.0,
        retries=0,
        limits=Limits(),
    )
    try:
        answers = {
            0: ("ok", RECORD),
            1: ("ok", b"other bytes"),
            2: ("purged", None),
            3: ("unknown", None),
            4: ("wrong-nonce", RECORD),
        }
        time.sleep(0.2)  # let the DEALER connect (ZMQ_IMMEDIATE)
        for seq in answers:
            opener.request(commit(seq))
        for _ in answers:
            assert router.poll(5000)
            ident, *frames = router.recv_multipart()
            req = decode(frames, expect=("open",))
            status, data = answers[req.seq]
            nonce = b"x" * 16 if status == "wrong-nonce" else req.nonce
            reply = OpenReply(
                node="n1",
                t=1.0,
                seq=req.seq,
                nonce=nonce,
                status="ok" if status == "wrong-nonce" else status,
                record=data,
            )
            router.send_multipart([ident, *encode(reply)])
        router.send_multipart([ident, b"opened", b"\xc1"])  # garbage: counted, ignored
        got = {o.commit.seq: o.kind for o in pump(opener, 4)}
        assert got == {0: "opened", 1: "bad_opening", 2: "purged", 3: "unknown"}
        deadline = time.monotonic() + 5
        while opener.rejects["malformed"] == 0 and time.monotonic() < deadline:
            if opener.sockets["n1"].poll(50):  # the garbage frame may still be on its way
                opener.on_readable(opener.sockets["n1"])
        assert opener.rejects["unsolicited"] == 1 and opener.rejects["malformed"] == 1
        assert (4, "unopened") in [(o.commit.seq, o.kind) for o in pump(opener, 1, 5.0)]
    finally:
        opener.close()
        router.close()


def test_no_peer_gives_up_within_the_budget() -> None:
    ctx = zmq.Context.instance()
    with ctx.socket(zmq.ROUTER) as probe:
        port = probe.bind_to_random_port("tcp://127.0.0.1")
    opener = Opener(
        ctx,
        {"n1": f"tcp://127.0.0.1:{port}"},
        verifier="v",
        deadline_s=0.2,
        retries=1,
        limits=Limits(),
    )
    try:
        opener.request(commit(7))
        (o,) = pump(opener, 1, 3.0)
        assert o.kind == "unopened" and "not reachable" in o.reason
    finally:
        opener.close()
