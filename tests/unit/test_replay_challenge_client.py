"""The challenge client thread over real ZeroMQ sockets: an intake ROUTER in the test answers
(or not) as an agent's would."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from fpmon.replay.challenge_client import Answered, ChallengeClient, Event, Failed, Plan, Sent
from fpmon.replay.challenge_schedule import ChallengeSchedule
from fpmon.transport import split_envelope
from fpmon.wire import Limits, SubmitReply, SubmitRequest, decode, encode

POOL = ("The treaty requires", "Inspectors verified that the cluster")


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    c: zmq.Context[Any] = zmq.Context()
    yield c
    c.destroy(linger=0)


def client(
    ctx: zmq.Context[Any], endpoint: str, registered: list[Sent], timeout_s: float = 5.0
) -> ChallengeClient:
    c = ChallengeClient(
        ctx,
        {"n": endpoint},
        ChallengeSchedule(bytes(32), 0.05, epoch=1),
        Plan("loadgen", POOL, (4, 8), timeout_s),
        Limits(),
        registered.append,
    )
    c.start()
    return c


def next_event(events: queue.Queue[Event], kind: type, timeout_s: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        e = events.get(timeout=max(deadline - time.monotonic(), 0.01))
        if isinstance(e, kind):
            return e


def test_a_challenge_looks_like_a_client_request_and_is_timed_to_its_reply(
    ctx: zmq.Context[Any],
) -> None:
    intake = ctx.socket(zmq.ROUTER)
    intake.bind("tcp://127.0.0.1:*")
    registered: list[Sent] = []
    c = client(ctx, intake.last_endpoint.decode(), registered)
    try:
        assert intake.poll(10_000)
        env, body = split_envelope(intake.recv_multipart())
        req = decode(body, expect=("submit",))
        assert isinstance(req, SubmitRequest)
        assert req.node == "loadgen" and req.prompt in POOL and req.max_tokens in (4, 8)
        assert len(req.request_id) == 32  # uuid4().hex, as fpmon submit and the loadgen
        # registered before it left: its commitment may arrive before its reply
        assert registered[0].request_id == req.request_id
        sent = next_event(c.events, Sent)
        time.sleep(0.2)  # the node "works" for 0.2 s
        reply = SubmitReply(node="n", t=time.time(), request_id=req.request_id, status="ok", seq=41)
        intake.send_multipart([*env, *encode(reply)])
        a = next_event(c.events, Answered)
        assert a.sent.request_id == sent.request_id and a.reply.seq == 41
        assert 0.2 <= a.latency_s < 2.0
        # a reply nobody asked for (late, or another's) is counted, not taken
        stray = SubmitReply(node="n", t=time.time(), request_id="f" * 32, status="ok", seq=1)
        intake.send_multipart([*env, *encode(stray)])
        deadline = time.monotonic() + 10
        while not c.rejects()["unsolicited"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert c.rejects()["unsolicited"] == 1
    finally:
        c.stop()
        c.join(5)
        intake.close(0)


def test_an_unanswered_challenge_times_out_and_an_absent_intake_is_unreachable(
    ctx: zmq.Context[Any],
) -> None:
    silent = ctx.socket(zmq.ROUTER)
    silent.bind("tcp://127.0.0.1:*")
    c = client(ctx, silent.last_endpoint.decode(), [], timeout_s=0.5)
    try:
        f = next_event(c.events, Failed)
        assert f.why == "timeout"
    finally:
        c.stop()
        c.join(5)
    port = silent.last_endpoint.decode()
    silent.close(0)  # nobody listens there any more
    c = client(ctx, port, [], timeout_s=0.5)
    try:
        f = next_event(c.events, Failed)
        assert f.why == "unreachable" and "clients_dir" in f.detail
    finally:
        c.stop()
        c.join(5)
