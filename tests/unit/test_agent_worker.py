"""The engine loop's refusals, on a real log and the real disk (no engine needed)."""

from __future__ import annotations

import queue
import time

import pytest
import zmq

from fpmon.agents.config import AgentConfig
from fpmon.agents.store import RecordLog
from fpmon.agents.worker import DISK_CHECK_EVERY_S, Worker
from fpmon.engines.base import ProbeSpec

NO_DISK_IS_THIS_BIG = 1 << 62


@pytest.fixture
def worker(tmp_path):
    cfg = AgentConfig(node="n", state_dir=tmp_path)
    store = RecordLog(cfg.db_path, node="n")
    ctx = zmq.Context()
    w = Worker(cfg, None, store, ctx, "inproc://r", queue.Queue(), ProbeSpec((0,)))
    yield w
    store.close()
    ctx.term()


def test_low_disk_refusal_clears_while_idle_when_space_returns(worker):
    now = time.monotonic()
    # A threshold above any disk's free space makes the real disk "nearly full".
    worker.cfg.store.min_free_bytes = NO_DISK_IS_THIS_BIG
    worker.on_idle(now)
    assert worker.refusing.startswith("disk nearly full")
    # Space comes back. The intake refuses at the door, so no batch reaches the engine: only
    # the idle hook can notice, and it does at its next check.
    worker.cfg.store.min_free_bytes = 0
    worker.on_idle(now + DISK_CHECK_EVERY_S / 2)
    assert worker.refusing, "re-checked the disk before its period"
    worker.on_idle(now + DISK_CHECK_EVERY_S)
    assert worker.refusing == ""


def test_a_failed_write_is_not_cleared_by_free_space(worker):
    worker.refuse("record log write failed (disk I/O error)", recoverable=False)
    worker.cfg.store.min_free_bytes = 0
    worker.on_idle(time.monotonic() + 10 * DISK_CHECK_EVERY_S)
    assert worker.refusing.startswith("record log write failed")


def test_idle_hook_beats_the_heartbeat(worker):
    worker.heartbeat = 0.0
    worker.on_idle(123.0)
    assert worker.heartbeat == 123.0
