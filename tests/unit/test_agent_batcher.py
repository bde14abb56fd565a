"""The batching policy: size cap, same length budget per batch, bounded wait."""

from __future__ import annotations

import queue
import threading
import time

from fpmon.agents.worker import Batcher, Job
from fpmon.wire import SubmitRequest


def _job(rid: str, max_tokens: int = 8) -> Job:
    req = SubmitRequest(node="c", t=0.0, request_id=rid, prompt="x", max_tokens=max_tokens)
    return Job([rid.encode()], req, time.monotonic())


def test_batches_cap_size_and_group_by_max_tokens():
    q: queue.Queue = queue.Queue()
    for j in (_job("a"), _job("b", 4), _job("c"), _job("d"), _job("e")):
        q.put(j)
    b = Batcher(q, max_batch=3, max_wait_s=0.0)
    stop = threading.Event()
    ids = [[j.req.request_id for j in b.collect(stop)] for _ in range(3)]
    assert ids == [["a", "c", "d"], ["b"], ["e"]]


def test_lone_request_waits_at_most_max_wait():
    q: queue.Queue = queue.Queue()
    q.put(_job("a"))
    b = Batcher(q, max_batch=4, max_wait_s=0.05)
    got = b.collect(threading.Event())
    assert [j.req.request_id for j in got] == ["a"]


def test_stop_returns_empty():
    stop = threading.Event()
    stop.set()
    assert Batcher(queue.Queue(), 4, 0.01).collect(stop) == []
