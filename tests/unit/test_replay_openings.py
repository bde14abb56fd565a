"""Openings over a real DEALER/ROUTER pair: outcomes, nonce matching, budget without a peer."""

from __future__ import annotations

import time

import zmq

from fpmon.canonical import digest
from fpmon.replay.openings import Opener
from fpmon.wire import Commit, Limits, OpenReply, OpenRequest, decode, encode

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
    sock = opener.sessions["n1"].socket
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
            if opener.sessions["n1"].poll(50):  # the garbage frame may still be on its way
                opener.on_readable(opener.sessions["n1"].socket)
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


def answer(router: zmq.Socket, ident: bytes, req: OpenRequest, nonce: bytes | None = None) -> None:
    reply = OpenReply(
        node="n1",
        t=1.0,
        seq=req.seq,
        nonce=req.nonce if nonce is None else nonce,
        status="ok",
        record=RECORD,
    )
    router.send_multipart([ident, *encode(reply)])


def test_a_late_answer_within_the_grace_is_judged_not_dropped() -> None:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    opener = Opener(
        ctx,
        {"n1": f"tcp://127.0.0.1:{port}"},
        verifier="v",
        deadline_s=0.2,
        retries=0,
        limits=Limits(),
        grace_s=10.0,
    )
    try:
        time.sleep(0.2)  # let the DEALER connect (ZMQ_IMMEDIATE)
        opener.request(commit(3))
        assert router.poll(5000)
        ident, *frames = router.recv_multipart()
        req = decode(frames, expect=("open",))
        deadline = time.monotonic() + 5
        while not opener.late and time.monotonic() < deadline:
            assert opener.tick() == []  # given up on, but no verdict yet: grace
            time.sleep(0.05)
        assert (("n1", 3) in opener.late) and not opener.pending
        answer(router, ident, req, nonce=b"y" * 16)  # a forged late answer: not it
        answer(router, ident, req)
        (o,) = pump(opener, 1)
        assert (o.kind, o.commit.seq, o.record) == ("opened", 3, RECORD)
        assert opener.answered_late == 1 and opener.rejects["unsolicited"] == 1
        assert not opener.late
    finally:
        opener.close()
        router.close()


def test_grace_ends_in_unopened_and_its_map_is_bounded() -> None:
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    opener = Opener(
        ctx,
        {"n1": f"tcp://127.0.0.1:{port}"},
        verifier="v",
        deadline_s=0.1,
        retries=0,
        limits=Limits(),
        grace_s=4.0,
        max_late=2,
    )
    try:
        time.sleep(0.2)
        for seq in range(5):
            opener.request(commit(seq))
        asked = []
        while len(asked) < 5 and router.poll(5000):
            ident, *frames = router.recv_multipart()
            asked.append(decode(frames, expect=("open",)))
        cut = pump(opener, 3, 5.0)  # the three oldest cannot wait: the map holds two
        assert sorted(o.commit.seq for o in cut) == [0, 1, 2]
        assert all(o.kind == "unopened" and "grace cut short" in o.reason for o in cut)
        assert sorted(seq for _, seq in opener.late) == [3, 4]
        # A flood of late answers that match nothing grows nothing: counted, dropped.
        for i in range(500):
            answer(router, ident, asked[i % 3])  # the requests already decided
        flood: list = []
        deadline = time.monotonic() + 3
        while opener.rejects["unsolicited"] < 500 and time.monotonic() < deadline:
            if opener.sessions["n1"].poll(50):
                flood += opener.on_readable(opener.sessions["n1"].socket)
        assert flood == [] and len(opener.late) == 2
        assert opener.rejects["unsolicited"] == 500
        rest = pump(opener, 2, 10.0)
        assert sorted(o.commit.seq for o in rest) == [3, 4]
        assert all("nor in the 4 s grace" in o.reason for o in rest) and not opener.late
    finally:
        opener.close()
        router.close()
