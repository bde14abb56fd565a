"""Sidecar mode (`[vllm] server`): the agent serves through an operator's own `vllm serve`.

The server runs fpmon's plugin classes (docs/VLLM.md has the one command); the agent forwards
each accepted submit to the server's completions route as it arrives (up to
`batching.max_batch` in flight; vLLM batches them continuously with whatever else it runs),
then collects the request's probes and schedule window from the plugin and builds the record
the way in-process serving does: numbered, declared, logged, committed, published, and the
completion sent back. Records are numbered in the order requests finish.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any
from urllib.parse import urlsplit

from fpmon.agents.config import AgentConfig
from fpmon.agents.worker import MAX_ENGINE_FAULTS, Job, Worker
from fpmon.engines.vllm.attach import (
    Completion,
    NotAttached,
    RequestRefused,
    ServerTap,
    drain_key,
    serve_command,
)
from fpmon.engines.vllm.engine import model_name
from fpmon.errors import FpmonError
from fpmon.logs import fields
from fpmon.records import HIDDEN_PROBE, TOPK_IDS, TOPK_VALUES, Record

log = logging.getLogger("fpmon.agent.sidecar")

# What a request thread hands the loop: the completion, the plugin's material, when it ended.
Served = tuple[Completion, dict[str, Any] | None, float]

POLL_S = 0.01  # how often the loop looks at requests in flight and the intake queue
# A finished request reaches the plugin's log at the server's next engine step: a few ms.
DRAIN_WAIT_S = 10.0


def connect(cfg: AgentConfig) -> ServerTap:
    """The operator's server, checked: reachable, vLLM's OpenAI server, dev mode on, fpmon's
    plugin loaded. Every refusal is one line naming `[vllm] server` and the command to run."""
    url = cfg.vllm.server
    tap = ServerTap(url, timeout_s=cfg.batching.stall_s)
    try:
        tap.connect()
    except FpmonError as e:
        model = cfg.engine.model if cfg.engine.model != "tiny" else "MODEL_FOLDER"
        start = serve_command(model, urlsplit(url).port or 8000)
        raise FpmonError(f"[vllm] server = {url!r}: {e}; start it with: {start}") from None
    return tap


def attach(tap: ServerTap, cfg: AgentConfig, layers: list[int], topk: int) -> None:
    """Install the probes; refuse a server running another model or dtype than declared."""
    try:
        info = tap.attach(layers, topk)
    except FpmonError as e:
        raise FpmonError(f"[vllm] server = {cfg.vllm.server!r}: {e}") from None
    if info["model"] != model_name(cfg.engine.model):
        raise FpmonError(
            f"[vllm] server = {cfg.vllm.server!r} serves model {info['model']!r}, but [engine] "
            f"model = {cfg.engine.model!r}: set it to the folder the server loads"
        )
    if info["dtype"] != cfg.engine.dtype:
        raise FpmonError(
            f"[vllm] server = {cfg.vllm.server!r} runs {info['dtype']}, but [engine] dtype "
            f"declares {cfg.engine.dtype}: make them agree (vllm serve --dtype)"
        )
    log.info(
        "attached to the vLLM server",
        extra=fields(server=cfg.vllm.server, model=info["model"], layers=info["layers"]),
    )


class _Drains:
    """The plugin's finished requests, drained by whichever request thread asks first; what
    a drain brings for other requests waits here for them (one drain at a time)."""

    def __init__(self, tap: ServerTap, reattach: Callable[[], None]) -> None:
        self.tap, self.reattach = tap, reattach
        self.lock = threading.Lock()
        self.stash: dict[str, dict[str, Any]] = {}

    def take(self, key: str) -> dict[str, Any] | None:
        """The material for request `key`; None if the plugin never reports it."""
        deadline = time.monotonic() + DRAIN_WAIT_S
        pause = 0.002
        while True:
            with self.lock:
                if key not in self.stash:
                    self._drain()
                if key in self.stash:
                    return self.stash.pop(key)
            if time.monotonic() > deadline:
                return None
            time.sleep(pause)  # the plugin logs a finish at the server's next engine step
            pause = min(pause * 2, 0.1)

    def _drain(self) -> None:
        try:
            drained = self.tap.drain()
        except NotAttached:
            # The server restarted: what it ran before is gone, what comes next is probed.
            log.warning("the vLLM server lost fpmon's probes: attaching again")
            self.reattach()
            raise
        for item in drained:
            self.stash[item["request_id"]] = item

    def forget(self, keep: set[str]) -> list[str]:
        """Drop material no request in `keep` will take: requests the agent did not send."""
        with self.lock:
            gone = [k for k in self.stash if k not in keep]
            for k in gone:
                del self.stash[k]
        return gone


class SidecarWorker(Worker):
    """The engine loop with the engine in another process: forward, wait, collect, record.

    Each request runs in a pool thread (completion, then its probes from the plugin), so the
    loop itself only admits requests and builds records: it never waits on the server."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tap: ServerTap = self.engine
        self._attach()
        self.drains = _Drains(self.tap, self._attach)
        self.limit = self.cfg.batching.max_batch
        self.pool = ThreadPoolExecutor(self.limit, thread_name_prefix="fpmon-vllm")
        self.flight: dict[Future[Served], tuple[Job, str, float]] = {}
        self.unclaimed = 0  # requests the server finished that the agent did not send

    def _attach(self) -> None:
        attach(self.tap, self.cfg, list(self.probes.layers), self.probes.topk)

    def run(self) -> None:
        try:
            super().run()
        finally:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def running(self) -> bool:
        # After a stop, requests already at the server are still answered and recorded.
        return super().running() or bool(self.flight)

    def status(self) -> dict[str, Any]:
        return {
            "sidecar": {
                "server": self.cfg.vllm.server,
                "in_flight": len(self.flight),
                "unclaimed": self.unclaimed,
            }
        }

    # -- one turn ---------------------------------------------------------------------------
    def step(self) -> list[list[bytes]]:
        frames = self._admit()
        if not self.flight:
            return frames
        done, _ = wait(list(self.flight), timeout=POLL_S, return_when=FIRST_COMPLETED)
        if done:
            frames += self._harvest(done)
        return frames

    def _admit(self) -> list[list[bytes]]:
        """Send waiting requests to the server, up to the in-flight limit."""
        frames: list[list[bytes]] = []
        stopping = self.stop_event.is_set()
        while not stopping and len(self.flight) < self.limit:
            try:
                # Nothing in flight: wait here (and tick the idle work) instead of spinning.
                job = self.jobs.get(timeout=0.2) if not self.flight else self.jobs.get_nowait()
            except queue.Empty:
                if not self.flight:
                    self.on_idle()
                return frames
            if job is None:
                return frames
            if job.req.prompt_ids is not None:  # the server's completions route takes text
                why = "this agent serves through a vLLM server: send the prompt as text"
                frames.append(self._reply(job, status="rejected", reason=why))
                continue
            self._check_disk()
            if self.refusing:
                frames.append(self._reply(job, status="rejected", reason=self.refusing))
                continue
            key = drain_key(tag := uuid.uuid4().hex)
            self.flight[self.pool.submit(self._serve_one, job, tag)] = (job, key, time.time())
        return frames

    def _serve_one(self, job: Job, tag: str) -> Served:
        """Pool thread: the completion, then the plugin's material for it."""
        comp = self.tap.complete(job.req.prompt, job.req.max_tokens, tag)
        return comp, self.drains.take(comp.key), time.time()

    def _harvest(self, done: set[Future[Served]]) -> list[list[bytes]]:
        """Served requests become records for the committer, in the order they finished."""
        frames: list[list[bytes]] = []
        jobs: list[Job] = []
        records: list[Record] = []
        texts: list[str] = []
        for fut in sorted(done, key=_finish_time):
            job, _key, t0 = self.flight.pop(fut)
            try:
                comp, item, t1 = fut.result()
            except RequestRefused as e:
                frames.append(self._reply(job, status="rejected", reason=str(e)[:300]))
                continue
            except Exception as e:  # the server is gone or broke off: this request only
                frames.append(self._fault(job, e))
                continue
            try:
                rec = self._record(job, comp, item, t0, t1)
            except Exception as e:  # a malformed plugin item fails this request, not the agent
                why = str(e) if isinstance(e, FpmonError) else f"{type(e).__name__}: {e}"
                frames.append(self._reply(job, status="error", reason=why[:300]))
                log.error("no record for a served request", extra=fields(error=why))
                continue
            seq = self._next_seq + len(records)
            records.append(rec.with_identity(self.cfg.node, seq, rec.request_id))
            jobs.append(job)
            texts.append(comp.text)
        if jobs:
            self.hand_over(self.prepare(jobs, records, texts))
        self._count_unclaimed()
        return frames

    def _count_unclaimed(self) -> None:
        for key in self.drains.forget({k for _j, k, _t in self.flight.values()}):
            self.unclaimed += 1
            if self.unclaimed & (self.unclaimed - 1) == 0:
                log.warning(
                    "the vLLM server ran a request the agent did not send: not recorded",
                    extra=fields(request=key, count=self.unclaimed),
                )

    def _record(
        self, job: Job, comp: Completion, item: dict[str, Any] | None, t0: float, t1: float
    ) -> Record:
        if item is None:
            raise FpmonError(
                f"the vLLM server did not report probes for request {job.req.request_id} within "
                f"{DRAIN_WAIT_S:g} s"
            )
        rec = self.tap.to_record(
            item,
            node=self.cfg.node,
            seq=0,
            request_id=job.req.request_id,
            t_start=t0,
            t_end=t1,
            timings={"prefill_s": comp.first_s, "decode_s": comp.total_s - comp.first_s},
        )
        if rec.output_ids != comp.output_ids or rec.prompt_ids != comp.prompt_ids:
            raise FpmonError(
                f"request {job.req.request_id}: the plugin's tokens differ from the ones the "
                "server sent back: not recorded"
            )
        return _keep(rec, self.probes)

    def _fault(self, job: Job, e: BaseException) -> list[bytes]:
        """A request the server failed: answered `error`; repeated failures end the agent."""
        self.engine_faults += 1
        log.error(
            "vLLM server request failed", extra=fields(error=str(e), faults=self.engine_faults)
        )
        if self.engine_faults >= MAX_ENGINE_FAULTS:
            raise FpmonError(f"the vLLM server failed {self.engine_faults} requests in a row: {e}")
        return self._reply(job, status="error", reason=str(e)[:300])


def _keep(rec: Record, probes: Any) -> Record:
    """Only the probes `[probes]` asks for (the plugin captures keys, hidden and top-k)."""
    import dataclasses

    drop = set()
    if not probes.keys:
        drop |= {k for k in rec.probes if k.startswith("keys.")}
    if not probes.hidden:
        drop.add(HIDDEN_PROBE)
    if not probes.logits:
        drop |= {TOPK_VALUES, TOPK_IDS}
    if not drop:
        return rec
    kept = {k: v for k, v in rec.probes.items() if k not in drop}
    return dataclasses.replace(rec, probes=kept)


def _finish_time(fut: Future[Served]) -> float:
    try:
        return fut.result()[2]
    except Exception:
        return 0.0
