"""The replay worker: one thread judging opened records off a bounded queue.

It never touches sockets or the store (the daemon's main thread owns those); it hands each
Judgement back through a result queue. Torch releases the GIL in its kernels, so ingest keeps
up while a replay runs.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import traceback

from fpmon.replay.judge import Judge, Judgement
from fpmon.wire import Commit, Verdict

log = logging.getLogger("fpmon.replay.worker")


class ReplayWorker(threading.Thread):
    def __init__(self, judge: Judge, maxsize: int) -> None:
        super().__init__(name="fpmon-replay", daemon=True)
        self.judge = judge
        self.jobs: queue.Queue[tuple[Commit, bytes] | None] = queue.Queue(maxsize=maxsize)
        self.results: queue.Queue[Judgement] = queue.Queue()
        self.busy = False

    def offer(self, commit: Commit, record: bytes) -> bool:
        """Queue a replay; False when the queue is full (the caller sheds and says so)."""
        try:
            self.jobs.put_nowait((commit, record))
        except queue.Full:
            return False
        return True

    def depth(self) -> int:
        return self.jobs.qsize() + int(self.busy)

    def stop(self) -> None:
        while True:
            try:
                self.jobs.put_nowait(None)
                return
            except queue.Full:
                # What is dropped keeps its pending row in the store: resumed on restart.
                with contextlib.suppress(queue.Empty):
                    self.jobs.get_nowait()

    def run(self) -> None:
        while True:
            job = self.jobs.get()
            if job is None:
                return
            commit, record = job
            self.busy = True
            try:
                result = self.judge.judge(commit, record)
            except Exception as e:  # a bug must not stall the queue: say so in the verdict
                log.error(
                    "replay of %s/%s failed: %s", commit.node, commit.seq, traceback.format_exc()
                )
                result = Judgement(
                    Verdict(
                        node=commit.node,
                        t=0.0,
                        seq=commit.seq,
                        status="unverifiable",
                        request_id=commit.request_id,
                        reason=f"verifier error: {type(e).__name__}: {e}",
                    )
                )
            finally:
                self.busy = False
            result.commit_t = commit.t
            self.results.put(result)
