"""The engine loop: batch requests by policy, run them, build records, log, hand to the publisher.

Runs in its own thread. It never touches a socket the main loop owns: replies go back through
its own inproc PUSH socket, commitments to the publisher through a queue, so neither the
intake nor publishing ever waits on the model.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import zmq

from fpmon import canonical
from fpmon.agents.config import AgentConfig
from fpmon.agents.store import RecordLog, StoreError, free_bytes
from fpmon.canonical import digest as sha256
from fpmon.capture import record_from_row
from fpmon.engines.base import BatchRequest, ProbeSpec
from fpmon.errors import FpmonError
from fpmon.logs import fields
from fpmon.manifest import FILLER, root, row_for
from fpmon.records import Record
from fpmon.wire import Commit, SubmitReply, SubmitRequest, encode
from fpmon.wire.codec import payload
from fpmon.wire.messages import ClientRequest

log = logging.getLogger("fpmon.agent.worker")

RETENTION_EVERY_S = 10.0
# While the intake refuses at the door no batch reaches the engine, so the idle loop is what
# notices that disk space came back.
DISK_CHECK_EVERY_S = 1.0
MAX_ENGINE_FAULTS = 3  # consecutive failed batches before the agent gives up


@dataclass
class Job:
    ident: list[bytes]  # ROUTER envelope to reply to
    req: SubmitRequest
    arrived: float
    # The client's key and bytes as the intake received them; None (jobs made in-process):
    # the decoded request re-encoded, with no client key.
    request: ClientRequest | None = None

    def client_request(self) -> ClientRequest:
        return self.request or ClientRequest(submit=payload(self.req))


def _adopt_torch_threads() -> None:
    """Give this OS thread the process's torch thread count before the engine runs here.

    OpenMP keeps its thread count per OS thread and torch applies its own lazily, at the first
    parallel op: vLLM's CPU attention checks the count and failed the first request served
    from a new thread (2 vs 1). A first parallel op here settles it (set_num_threads alone may
    be a no-op: vLLM's CPU worker replaces it).
    """
    try:
        import torch
    except ImportError:
        return
    torch.set_num_threads(torch.get_num_threads())
    torch.ones(1 << 16).sum()


@dataclass
class Pending:
    """A batch run and its records built, not yet durable: nothing about it is said yet."""

    jobs: list[Job]
    records: list[Record]
    setups: list[dict[str, Any]]
    items: list[tuple[str, bytes, bytes, int]]
    completions: list[str] | None = None  # the text sent back; None: decode the record's tokens


class Batcher:
    """The batching policy: up to `max_batch` requests of the same length budget, waiting at
    most `max_wait_s` after the first arrives. Requests with another max_tokens wait their turn
    (a static batch decodes every row for the same number of steps)."""

    def __init__(self, q: queue.Queue[Job | None], max_batch: int, max_wait_s: float) -> None:
        self.q, self.max_batch, self.max_wait_s = q, max_batch, max_wait_s
        self.pending: deque[Job] = deque()

    def collect(
        self, stop: threading.Event, poll_s: float = 0.2, on_idle: Callable[[], None] | None = None
    ) -> list[Job]:
        while not self.pending and not stop.is_set():
            try:
                job = self.q.get(timeout=poll_s)
            except queue.Empty:
                if on_idle:
                    on_idle()
                continue
            if job is not None:
                self.pending.append(job)
        if not self.pending:
            return []
        self._drain()  # requests already waiting never wait for max_wait
        first = self.pending[0]
        deadline = first.arrived + self.max_wait_s
        while len(self._matching(first)) < self.max_batch:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                job = self.q.get(timeout=left)
            except queue.Empty:
                break
            if job is not None:
                self.pending.append(job)
        batch = self._matching(first)[: self.max_batch]
        for j in batch:
            self.pending.remove(j)
        return batch

    def _drain(self) -> None:
        while True:
            try:
                job = self.q.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                self.pending.append(job)

    def _matching(self, first: Job) -> list[Job]:
        return [j for j in self.pending if j.req.max_tokens == first.req.max_tokens]


class Worker(threading.Thread):
    def __init__(
        self,
        cfg: AgentConfig,
        engine: Any,
        store: RecordLog,
        ctx: zmq.Context[Any],
        replies_endpoint: str,
        commits: queue.Queue[Commit | None],
        probes: ProbeSpec,
    ) -> None:
        super().__init__(name="fpmon-engine", daemon=True)
        self.cfg, self.engine, self.store, self.ctx = cfg, engine, store, ctx
        self.replies_endpoint = replies_endpoint
        self.commits = commits
        self.probes = probes
        self.jobs: queue.Queue[Job | None] = queue.Queue()
        self.batcher = Batcher(self.jobs, self.batch_limit(), cfg.batching.max_wait_ms / 1000)
        self.stop_event = threading.Event()
        self.refusing = ""  # non-empty: why the agent takes no work (read by the intake)
        self._refusal_recoverable = False
        # The engine thread clears a low-disk refusal while the committer may set a hard one.
        self._refusal_lock = threading.Lock()
        self._next_disk_check = 0.0
        self.served = 0
        self.tokens = 0
        self.failed: BaseException | None = None
        self.engine_faults = 0
        # Records are built here with seqs from this counter, then made durable in order by
        # the committer thread (a bounded queue: the engine runs at most 2 batches ahead of
        # the disk). fsync overlaps the next batch instead of stalling it.
        self._next_seq = store.next_seq
        # Last sign of life of the engine loop: the watchdog stops when it is stale (hung
        # kernel, stuck disk behind the committer queue), so systemd restarts the agent.
        self.heartbeat = time.monotonic()
        self.pending: queue.Queue[Pending | None] = queue.Queue(maxsize=2)
        self._idle = threading.Condition()
        self._in_flight = 0
        self._next_retention = 0.0

    def stop(self) -> None:
        self.stop_event.set()
        self.jobs.put(None)

    def run(self) -> None:
        _adopt_torch_threads()
        committer = self.start_committer()
        out = self.ctx.socket(zmq.PUSH)
        out.linger = 0
        out.connect(self.replies_endpoint)
        try:
            while self.running() and self.failed is None:
                self.heartbeat = time.monotonic()
                for frames in self.step():
                    out.send_multipart(frames)
        except BaseException as e:  # the main loop sees this and exits non-zero
            self.failed = e
            log.exception("engine loop died", extra=fields(error=str(e)))
        finally:
            out.close()
            self.pending.put(None)
            committer.join()
            self.store.close()

    def running(self) -> bool:
        return not self.stop_event.is_set()

    def step(self) -> list[list[bytes]]:
        """One turn of the engine loop: a batch by the batching policy, run to records."""
        batch = self.batcher.collect(self.stop_event, on_idle=self.on_idle)
        return self.begin(batch) if batch else []

    def status(self) -> dict[str, Any]:
        """What this loop adds to the agent's status file (nothing for the in-process engine)."""
        return {}

    def on_idle(self, now: float | None = None) -> None:
        """No work came: feed the watchdog, and re-check the disk now and then."""
        now = time.monotonic() if now is None else now
        self.heartbeat = now
        if now >= self._next_disk_check:
            self._next_disk_check = now + DISK_CHECK_EVERY_S
            self._check_disk()

    def refuse(self, reason: str, *, recoverable: bool) -> None:
        """Take no more work. A recoverable refusal clears itself; a hard one never does."""
        with self._refusal_lock:
            if self.refusing and not self._refusal_recoverable:
                return  # the first hard reason is the one the operator must see
            self.refusing, self._refusal_recoverable = reason, recoverable
        log.error("refusing work", extra=fields(reason=reason, recoverable=recoverable))

    def start_committer(self) -> threading.Thread:
        t = threading.Thread(target=self._commit_loop, name="fpmon-commit", daemon=True)
        t.start()
        return t

    def _commit_loop(self) -> None:
        out = self.ctx.socket(zmq.PUSH)
        out.linger = 0
        out.connect(self.replies_endpoint)
        try:
            while (p := self.pending.get()) is not None:
                for frames in self.finish(p):
                    out.send_multipart(frames)
        except BaseException as e:
            self.failed = e
            log.exception("commit loop died", extra=fields(error=str(e)))
        finally:
            out.close()

    def begin(self, batch: list[Job]) -> list[list[bytes]]:
        """Run a batch and queue its records for the committer; return immediate replies."""
        frames, pending = self._execute(batch)
        if pending is not None:
            self.hand_over(pending)
        return frames

    def hand_over(self, pending: Pending) -> None:
        """Queue built records for the committer (blocks while it is two batches behind)."""
        with self._idle:
            self._in_flight += 1
        self.pending.put(pending)

    def finish(self, p: Pending) -> list[list[bytes]]:
        """Make a batch durable, then publish and reply (committer thread)."""
        try:
            if self.refusing and not self._refusal_recoverable:
                return [self._reply(j, status="error", reason=self.refusing) for j in p.jobs]
            try:
                return self._commit(p)
            except StoreError as e:
                self.refuse(str(e), recoverable=False)  # a failed write needs an operator
                return [self._reply(j, status="error", reason=self.refusing) for j in p.jobs]
        finally:
            with self._idle:
                self._in_flight -= 1
                self._idle.notify_all()

    def drain(self, timeout_s: float = 60.0) -> None:
        """Wait until every started batch is durable and answered (benchmarks, tests)."""
        with self._idle:
            self._idle.wait_for(lambda: self._in_flight == 0, timeout_s)

    def serve(self, batch: list[Job]) -> list[list[bytes]]:
        """Run one batch to durable records, inline; return every reply frame."""
        frames, pending = self._execute(batch)
        if pending is not None:
            with self._idle:
                self._in_flight += 1
            frames += self.finish(pending)
        return frames

    def _check_disk(self) -> None:
        free = free_bytes(self.store.path)
        low = free < self.cfg.store.min_free_bytes
        with self._refusal_lock:
            if self.refusing and not self._refusal_recoverable:
                return
            was = self.refusing
            if low and not was:
                self.refusing = (
                    f"disk nearly full ({free} bytes free < store.min_free_bytes "
                    f"{self.cfg.store.min_free_bytes}): not taking work it cannot commit"
                )
                self._refusal_recoverable = True
            elif not low and was:
                self.refusing, self._refusal_recoverable = "", False
        if low and not was:
            log.error("refusing work", extra=fields(reason=self.refusing, recoverable=True))
        elif not low and was:
            log.warning("disk space back: taking work again", extra=fields(free=free))

    def _reply(self, job: Job, **kw: Any) -> list[bytes]:
        msg = SubmitReply(node=self.cfg.node, t=time.time(), request_id=job.req.request_id, **kw)
        return [*job.ident, *encode(msg)]

    def _execute(self, batch: list[Job]) -> tuple[list[list[bytes]], Pending | None]:
        """Engine thread: check, run, build records. Replies for what it rejects at once."""
        self._check_disk()
        if self.refusing:
            return [self._reply(j, status="rejected", reason=self.refusing) for j in batch], None
        ok, replies, prompts = [], [], []
        for j in batch:
            ids, why = self._prompt_ids(j.req)
            longest = len(ids) + j.req.max_tokens
            if not why and longest > self.engine.max_positions:
                why = (
                    f"prompt of {len(ids)} tokens + {j.req.max_tokens} new tokens exceeds the "
                    f"model's {self.engine.max_positions} positions: shorten it"
                )
            if why:
                replies.append(self._reply(j, status="rejected", reason=why))
                continue
            ok.append(j)
            prompts.append(ids)
        if not ok:
            return replies, None
        try:
            return replies, self._run(ok, prompts)
        except FpmonError as e:
            return replies + [self._reply(j, status="rejected", reason=str(e)) for j in ok], None
        except Exception as e:  # an engine fault (e.g. out of memory) fails this batch only
            self.engine_faults += 1
            log.exception("batch failed", extra=fields(error=str(e), faults=self.engine_faults))
            if self.engine_faults >= MAX_ENGINE_FAULTS:
                raise  # repeated faults: exit non-zero so the service manager restarts us
            why = f"engine error: {type(e).__name__}: {e}"[:300]
            return replies + [self._reply(j, status="error", reason=why) for j in ok], None

    def _prompt_ids(self, req: SubmitRequest) -> tuple[list[int], str]:
        """The request's prompt tokens, or why there are none to run."""
        if req.prompt_ids is None:
            ids = self.engine.encode(req.prompt)
            return ids, "" if ids else "empty prompt"
        if req.prompt:
            return [], "give the prompt as text or as token ids, not both"
        vocab = self.engine.vocab_limit
        if not req.prompt_ids or any(i >= vocab for i in req.prompt_ids):
            return [], f"prompt_ids must be 1 or more token ids below the vocabulary's {vocab}"
        return list(req.prompt_ids), ""

    # Seams a red-team agent overrides (agents/redteam.py); an honest one runs these.
    def batch_limit(self) -> int:
        return self.cfg.batching.max_batch

    def rows_for(self, prompts: list[list[int]]) -> list[list[int]]:
        """The engine's batch rows: the requests' prompts, nothing else."""
        return [list(p) for p in prompts]

    def declared(self, rec: Record) -> Record:
        """The record as committed: what actually ran."""
        return rec

    def after_batch(self, rows: list[list[int]], steps: int) -> None:
        """Between a batch's end and its commit: nothing, on an honest node."""

    def _run(self, jobs: list[Job], prompts: list[list[int]]) -> Pending:
        rows = self.rows_for(prompts)
        steps = jobs[0].req.max_tokens - 1
        t0 = time.time()
        result = self.engine.run_batch(
            BatchRequest(
                rows=rows, decode_steps=steps, probe_rows=list(range(len(jobs))), probes=self.probes
            )
        )
        t1 = time.time()
        self.after_batch(rows, steps)
        # Every row the engine ran, in row order: a request's row names it and its client's
        # digest; a row no request came with (there is none on an honest node) is a filler.
        requests = [j.client_request() for j in jobs]
        manifest = tuple(row_for(j.req.request_id, r) for j, r in zip(jobs, requests, strict=True))
        manifest += (FILLER,) * (len(rows) - len(jobs))
        records = [
            dataclasses.replace(
                record_from_row(
                    self.engine,
                    result,
                    i,
                    ids,
                    self.probes,
                    node=self.cfg.node,
                    seq=self._next_seq + i,
                    request_id=job.req.request_id,
                    t_start=t0,
                    t_end=t1,
                ),
                manifest=manifest,
                request=requests[i],
            )
            for i, (job, ids) in enumerate(zip(jobs, prompts, strict=True))
        ]
        return self.prepare(jobs, records)

    def prepare(
        self, jobs: list[Job], records: list[Record], completions: list[str] | None = None
    ) -> Pending:
        """Records numbered from the next seq, as declared, encoded once for log and commit."""
        items, declared, setups = [], [], []
        for job, rec in zip(jobs, records, strict=True):
            rec = self.declared(rec)
            m = rec.to_map()  # once: the setup map goes into the commitment too
            data = canonical.pack(m)  # == rec.encode()
            items.append((job.req.request_id, sha256(data), data, len(rec.output_ids)))
            declared.append(rec)
            setups.append(m["setup"])
        self._next_seq += len(jobs)
        self.engine_faults = 0
        return Pending(jobs, declared, setups, items, completions)

    def _commit(self, p: Pending) -> list[list[bytes]]:
        appended = self.store.append(p.items)  # the durability point: nothing is said before it
        if [a.seq for a in appended] != [r.seq for r in p.records]:
            # Cannot happen while one committer appends in order; if it did, the records
            # would name seqs their commitments do not: stop rather than fork the chain.
            raise RuntimeError("record log and engine disagree on seq: stopping")
        jobs, records = p.jobs, p.records
        now = time.time()
        frames = []
        texts = p.completions or [self.engine.decode(r.output_ids) for r in records]
        for job, rec, setup, a, text in zip(jobs, records, p.setups, appended, texts, strict=True):
            self.commits.put(
                Commit(
                    node=self.cfg.node,
                    t=now,
                    seq=a.seq,
                    request_id=rec.request_id,
                    record_digest=a.digest,
                    chain=a.chain,
                    setup=setup,
                    model=rec.model,
                    prompt_tokens=len(rec.prompt_ids),
                    output_tokens=len(rec.output_ids),
                    # The record's own times (a batch's, or one served request's).
                    prefill_s=rec.timings.get("prefill_s", 0.0),
                    decode_s=rec.timings.get("decode_s", 0.0),
                    manifest=root(rec.manifest),
                )
            )
            frames.append(
                self._reply(
                    job,
                    status="ok",
                    completion=text,
                    output_ids=list(rec.output_ids),
                    seq=a.seq,
                )
            )
        self.served += len(jobs)
        self.tokens += sum(len(r.output_ids) for r in records)
        self._retention(now)
        return frames

    def _retention(self, now: float) -> None:
        if now < self._next_retention:
            return
        self._next_retention = now + RETENTION_EVERY_S
        n = self.store.enforce_retention(self.cfg.store.max_bytes, self.cfg.store.max_age_s, now)
        if n:
            log.info("retention purged record bodies", extra=fields(purged=n))
