"""The publisher thread: owns the PUB socket; commitments, signed heads, telemetry.

Commitments arrive on a queue only after they are durable. A head is signed every
`head_every_s` seconds (even when idle, so late subscribers learn the head) or every
`head_every_n` commitments, whichever comes first.

After a restart the logged tail (`agents/republish.py`) goes out with the first head cycle,
`tail_after_s` after start: a PUB drops what it sends before its subscribers' subscriptions
arrive (ZeroMQ's slow joiner), so sending it at once would lose it. New commitments wait
behind the tail, so subscribers see seqs in order.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgpack
import zmq

from fpmon.agents.heads import HeadSigner
from fpmon.agents.telemetry import TelemetrySource
from fpmon.logs import fields
from fpmon.wire import Commit, encode

log = logging.getLogger("fpmon.agent.publisher")

COMMIT_TOPIC = Commit.TOPIC.encode()


def commit_frames(c: Commit) -> list[bytes]:
    """The hot path: the same map as `fpmon.wire.encode`, without canonical key sorting.

    Only hashed bytes (records) need canonical order; a commitment frame is read as a map by
    name, and sorting costs ~5x the packing at tens of thousands of frames a second.
    """
    return [COMMIT_TOPIC, msgpack.packb(c.to_map(), use_bin_type=True, use_single_float=False)]


class Publisher:
    """Publishing logic; `run()` is the thread body. Usable inline by the benchmark."""

    def __init__(
        self,
        pub: zmq.Socket[Any],
        signer: HeadSigner,
        *,
        head_seq: int,
        head_chain: bytes,
        head_every_s: float = 1.0,
        head_every_n: int = 1000,
        telemetry: TelemetrySource | None = None,
        telemetry_every_s: float = 1.0,
        tail: Sequence[Commit] = (),
        tail_after_s: float = 1.0,
        on_head: Callable[[int], None] | None = None,
    ) -> None:
        self.pub = pub
        self.signer = signer
        self.seq, self.chain = head_seq, head_chain
        self.head_every_s, self.head_every_n = head_every_s, head_every_n
        self.telemetry, self.telemetry_every_s = telemetry, telemetry_every_s
        self.queue: queue.Queue[Commit | None] = queue.Queue()
        self.published = 0
        self.heads = 0
        self._since_head = 0
        self._next_head = 0.0
        self._next_telemetry = 0.0
        self._tail = list(tail)
        if self._tail:
            self._next_head = time.monotonic() + tail_after_s  # the first head cycle
        self.republished = 0
        # Told the seq of each head sent once nothing before it is still held back: a restart
        # republishes only what comes after the last one.
        self.on_head = on_head
        self.stop_event = threading.Event()

    def commit(self, c: Commit) -> None:
        # The chain position advances even when a red-team publisher drops or holds the frame
        # back: heads still sign the true chain, which is exactly what exposes the hole.
        self.seq, self.chain = c.seq, c.chain
        self.send_commit(c)
        self._since_head += 1
        if self._since_head >= self.head_every_n:
            self.head()

    def send_commit(self, c: Commit, republished: bool = False) -> None:
        """Publish one commitment (a red-team publisher, agents/redteam.py, overrides this)."""
        self.pub.send_multipart(commit_frames(c), copy=False)
        if not republished:
            self.published += 1

    def head(self) -> None:
        self._next_head = time.monotonic() + self.head_every_s
        self._since_head = 0
        if self._tail:
            self._send_tail()
        if self.seq < 0:
            return  # nothing committed yet: no chain to sign
        self.pub.send_multipart(encode(self.signer.head(self.seq, self.chain)))
        self.heads += 1
        if self.on_head is not None:
            self.on_head(self.seq)

    def _send_tail(self) -> None:
        for c in self._tail:
            self.send_commit(c, republished=True)
        self.republished += len(self._tail)
        log.info(
            "republished the logged tail",
            extra=fields(first=self._tail[0].seq, last=self._tail[-1].seq, n=len(self._tail)),
        )
        self._tail = []

    def tick(self, now: float) -> None:
        if now >= self._next_head:
            self.head()
        if self.telemetry is not None and now >= self._next_telemetry:
            self._next_telemetry = now + self.telemetry_every_s
            try:
                self.pub.send_multipart(encode(self.telemetry.sample()))
            except Exception as e:  # a sensor failure must not stop commitments
                log.warning("telemetry sample failed", extra=fields(error=str(e)))

    def run(self) -> None:
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                self.tick(now)
                wait = min(self._next_head, self._next_telemetry or self._next_head) - now
                if self._tail:  # new commitments wait behind the tail
                    self.stop_event.wait(max(wait, 0.001))
                    continue
                try:
                    item = self.queue.get(timeout=max(wait, 0.001))
                except queue.Empty:
                    continue
                while item is not None:
                    self.commit(item)
                    try:
                        item = self.queue.get_nowait()
                    except queue.Empty:
                        break
        finally:
            # Drain what is already durable, then a last head, so a clean stop leaves no hole.
            if self._tail:
                self._send_tail()
            while True:
                try:
                    item = self.queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    self.commit(item)
            self.head()
            self.pub.close(linger=500)

    def stop(self) -> None:
        self.stop_event.set()
        self.queue.put(None)
