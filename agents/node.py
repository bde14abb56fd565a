"""The agent process: wires store, engine loop, publisher, intake and openings together.

Threads: the main thread owns the intake and openings ROUTERs (and the watchdog); the engine
thread (`worker.Worker`) batches and runs the model; the publisher thread owns the PUB. Each
ZeroMQ socket is used by one thread only; they talk through an inproc PUSH/PULL and a queue.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

from fpmon.agents.config import AgentConfig
from fpmon.agents.heads import HeadSigner
from fpmon.agents.keys import load_signing_key, signing_public_hex
from fpmon.agents.openings import answer_links
from fpmon.agents.parts import Parts, parts_for
from fpmon.agents.republish import logged_tail
from fpmon.agents.sdnotify import Notifier
from fpmon.agents.security import Security, hard_cap
from fpmon.agents.store import RecordLog, StoreError, Verified
from fpmon.agents.telemetry import TelemetrySource
from fpmon.agents.worker import Job
from fpmon.engines.base import ProbeSpec, default_layers
from fpmon.engines.factory import EngineSpec, build
from fpmon.logs import fields
from fpmon.session import Received, Session
from fpmon.transport import bind
from fpmon.wire import (
    Limits,
    LinksRequest,
    Message,
    OpenReply,
    OpenRequest,
    SubmitReply,
    SubmitRequest,
    WireError,
)
from fpmon.wire.messages import ClientRequest

log = logging.getLogger("fpmon.agent")

STATUS_EVERY_S = 1.0


def build_engine(cfg: AgentConfig, parts: Parts) -> Any:
    if cfg.vllm.server:  # sidecar: the operator's server runs the model (agents/sidecar.py)
        from fpmon.agents.sidecar import connect

        return connect(cfg)
    import torch

    e = parts.engine(cfg.engine)
    if e.threads:
        torch.set_num_threads(e.threads)
    v = cfg.vllm
    engine = build(
        EngineSpec(
            e.model,
            kind=e.kind,
            dtype=e.dtype,
            attn=e.attn,
            device=e.device,
            compiled=e.compiled,
            sdpa_backend=e.sdpa_backend,
            max_num_batched_tokens=v.max_num_batched_tokens,
            max_num_seqs=v.max_num_seqs,
            kv_cache_bytes=v.kv_cache_bytes,
        )
    )
    # Before serving: the first client batch's committed time must not carry a compile or the
    # device's start-up (the verifier's timing checks read it).
    warm_up = getattr(engine, "warm_up", None)
    if warm_up is not None:
        log.info("engine warmed up", extra=fields(seconds=round(warm_up(), 3), compiled=e.compiled))
    return engine


def probe_spec(cfg: AgentConfig, num_layers: int) -> ProbeSpec:
    p = cfg.probes
    layers = tuple(p.layers) if p.layers is not None else tuple(default_layers(num_layers))
    return ProbeSpec(layers, topk=p.topk, keys=p.keys, hidden=p.hidden, logits=p.logits)


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def open_verified(cfg: AgentConfig, **store_kw: Any) -> tuple[RecordLog, Verified]:
    """The engine's log connection, after checking the file and the whole chain.

    A damaged log raises CorruptLog (one line, exit 2): serving from it would hand verifiers
    records the node cannot stand behind, and an ordinary bad disk would look like fraud.
    """
    store = RecordLog(cfg.db_path, **store_kw)
    try:
        report = store.verify()
    except BaseException:
        store.close()
        raise
    log.info(
        "record log verified",
        extra=fields(
            path=str(cfg.db_path),
            rows=report.rows,
            head_seq=report.head_seq,
            seconds=round(report.seconds, 3),
        ),
    )
    return store, report


class Agent:
    def __init__(self, cfg: AgentConfig, engine: Any = None) -> None:
        self.cfg = cfg
        self.parts = parts_for(cfg.redteam, cfg.node)
        self.started = time.time()
        os.makedirs(cfg.state_dir, exist_ok=True)
        self.key = load_signing_key(cfg.security.keys_dir, cfg.state_dir)
        self.signer = HeadSigner(self.key, cfg.node)
        # Open the log before loading the model: a bad state directory fails in a second.
        store_kw: dict[str, Any] = dict(
            node=cfg.node,
            synchronous=cfg.store.synchronous.upper(),
            hard_max_bytes=cfg.store.hard_max_bytes,
        )
        self.store, self.verified = open_verified(cfg, **store_kw)
        self.reader = RecordLog(cfg.db_path, **store_kw)  # the openings' own connection
        # The publisher's, for the published-head mark only: losing a mark to a power cut
        # just means republishing a little more, so no fsync for it.
        self.marks = RecordLog(cfg.db_path, **{**store_kw, "synchronous": "NORMAL"})
        # Faults of this node (not of its peers), by where and reason; exported in status.json.
        self.faults: dict[str, Counter[str]] = {
            k: Counter() for k in ("intake", "openings", "replies", "publish", "status")
        }
        self._faults_lock = threading.Lock()
        self._status_failing = False
        # Keys and allowlists next: a missing key folder fails before the model loads.
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.security = Security(self.ctx, cfg.security)
        try:
            self._build(cfg, engine)
        except BaseException:
            # The ZAP thread and sockets would keep a failed start from exiting.
            self.security.stop()
            self.ctx.destroy(linger=0)
            raise

    def _build(self, cfg: AgentConfig, engine: Any) -> None:
        self.engine = engine if engine is not None else build_engine(cfg, self.parts)
        self.probes = probe_spec(cfg, self.engine.num_layers)
        self.limits = Limits(max_bytes=cfg.security.max_msg_bytes)
        self._bind_sockets()
        tail = logged_tail(self.store, cfg.node, cfg.publish.republish_max)
        if tail.first_seq >= 0:
            log.info(
                "republishing the logged tail with the first head",
                extra=fields(
                    first=tail.first_seq,
                    commits=len(tail.commits),
                    purged=tail.purged,
                    corrupt=tail.corrupt,
                    after_s=cfg.publish.republish_after_s,
                ),
            )
        # The engine's own GPUs only (by UUID), and GPM where the GPU has it.
        telemetry = TelemetrySource(cfg.node, cfg.engine.device, gpm=cfg.publish.telemetry_gpm)
        self.publisher = self.parts.publisher(
            self.pub,
            self.signer,
            head_seq=self.store.head_seq,
            head_chain=self.store.head_chain,
            head_every_s=cfg.publish.head_every_s,
            head_every_n=cfg.publish.head_every_n,
            telemetry=telemetry,
            telemetry_every_s=cfg.publish.telemetry_every_s,
            tail=tail.commits,
            tail_after_s=cfg.publish.republish_after_s,
            on_head=self._mark_published,
        )
        worker_cls = self.parts.worker
        if cfg.vllm.server:
            # The operator's server runs the model: no worker-level lie applies (the config
            # refuses [redteam] actual_*); publisher and opener lies still compose.
            from fpmon.agents.sidecar import SidecarWorker

            worker_cls = SidecarWorker
        self.worker = worker_cls(
            cfg,
            self.engine,
            self.store,
            self.ctx,
            self.replies_endpoint,
            self.publisher.queue,
            self.probes,
        )
        if cfg.vllm.server:
            tap = self.engine
            telemetry.also_engine(lambda: tap.server_pids)  # the server's workers, kept current
        self.stop_event = threading.Event()
        self.notifier = Notifier()
        self._next_status = 0.0
        self._stall_logged = False

    def _bind_sockets(self) -> None:
        cfg, sec = self.cfg, self.security
        self.intake = self._router("intake", (SubmitRequest.TOPIC,), cfg.endpoints.intake)
        self.openings = self._router(
            "openings", (OpenRequest.TOPIC, LinksRequest.TOPIC), cfg.endpoints.openings
        )
        self.sessions = {"intake": self.intake, "openings": self.openings}
        self.rejects = {k: s.rejects for k, s in self.sessions.items()}  # in status.json
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.sndhwm = 200_000  # bursts of commitments are not dropped by a slow subscriber
        self.pub.linger = 0
        if cfg.endpoints.hub:
            sec.client_of(self.pub, cfg.security.hub_public_key)
            self.pub.connect(cfg.endpoints.hub)
        else:
            sec.server(self.pub, "publish")
            bind(self.pub, cfg.endpoints.publish, f"[endpoints] {'publish'}")
        self.replies = self.ctx.socket(zmq.PULL)
        self.replies.linger = 0
        self.replies_endpoint = f"inproc://fpmon-replies-{id(self)}"
        self.replies.bind(self.replies_endpoint)
        self._where = {
            self.intake.socket: "intake",
            self.openings.socket: "openings",
            self.replies: "replies",
        }
        self.endpoints = {
            "intake": self.intake.endpoint,
            "openings": self.openings.endpoint,
            "publish": cfg.endpoints.hub or self.pub.last_endpoint.decode(),
        }

    def _router(self, domain: str, expect: tuple[str, ...], endpoint: str) -> Session:
        s = Session(
            self.ctx,
            zmq.ROUTER,
            limits=self.limits,
            expect=expect,
            security=self.security.role(domain),
            max_frame_bytes=hard_cap(self.cfg.security.max_msg_bytes),
        )
        s.socket.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished client must not raise
        s.bind(endpoint, f"[endpoints] {domain}")
        return s

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop_event.set())
        # Drills and the demo only; started first, so that a failure to start stops nothing.
        side_work = self.parts.side_work(self.cfg.engine.device)
        pub_thread = threading.Thread(target=self.publisher.run, name="fpmon-publish", daemon=True)
        pub_thread.start()
        self.worker.start()
        log.info(
            "agent serving",
            extra=fields(
                node=self.cfg.node,
                endpoints=self.endpoints,
                head_seq=self.store.head_seq,
                pubkey=signing_public_hex(self.key),
                curve=self.security.on,
                setup=self.engine.setup.summary(),
            ),
        )
        self.notifier.ready(f"serving, head seq {self.store.head_seq}")
        poller = zmq.Poller()
        for s in self._where:
            poller.register(s, zmq.POLLIN)
        rc = 0
        try:
            while not self.stop_event.is_set():
                if self.worker.failed is not None or not self.worker.is_alive():
                    log.error("engine loop stopped: exiting so the service restarts")
                    rc = 1
                    break
                for sock, _ in poller.poll(100):
                    self._serve(sock)
                stalled = time.monotonic() - self.worker.heartbeat
                if stalled < self.cfg.batching.stall_s:
                    self.notifier.tick()
                elif not self._stall_logged:
                    self._stall_logged = True
                    log.error(
                        "engine loop stalled: no longer feeding the watchdog",
                        extra=fields(
                            stalled_s=round(stalled, 1), limit_s=self.cfg.batching.stall_s
                        ),
                    )
                self._write_status()
        finally:
            self.notifier.stopping()
            if side_work is not None:
                side_work.stop()
            self.worker.stop()
            self.worker.join(timeout=30)
            # Replies for work already durable still go out before the sockets close.
            while self.replies.poll(0):
                self.intake.forward(self.replies.recv_multipart())
            self.publisher.stop()
            pub_thread.join(timeout=10)
            self._write_status()
            for s in (self.intake, self.openings):
                s.close(linger=0)
            self.replies.close(linger=0)
            self.security.stop()
            self.reader.close()
            self.marks.close()
            self.ctx.term()
            log.info("agent stopped", extra=fields(node=self.cfg.node, rc=rc))
        return rc

    def stop(self) -> None:
        self.stop_event.set()

    # -- one message at a time --------------------------------------------------------------

    def _serve(self, sock: zmq.Socket[Any]) -> None:
        """Handle one message. Whatever it raises is counted and logged, never fatal: one
        peer's frame (or one bad row) must not take the node off the air."""
        where = self._where[sock]
        got: Received | None = None
        try:
            if where == "replies":
                self.intake.forward(sock.recv_multipart())
                return
            got = self.sessions[where].recv()
            if got is None:
                return
            if where == "intake":
                self._on_intake(got)
            else:
                self._on_open(got)
        except Exception as e:
            self._fault(where, f"internal:{type(e).__name__}", exc=e)
            if got is not None:
                self._answer_fault(self.sessions[where], where, got, e)

    def _answer_fault(self, session: Session, where: str, got: Received, e: Exception) -> None:
        why = f"internal error ({type(e).__name__}): not served, the node logged it; retry later"
        # The peer may be gone or the reply unbuildable; the fault is already counted.
        with contextlib.suppress(Exception):
            session.send(self._fault_reply(where, got.msg, why), got.envelope)

    def _fault_reply(self, where: str, req: Message | None, why: str) -> Message:
        # Echo the request's identity when it decoded, so the peer can match the answer.
        now, node = time.time(), self.cfg.node
        if where == "intake":
            rid = req.request_id if isinstance(req, SubmitRequest) else ""
            return SubmitReply(node=node, t=now, request_id=rid, status="error", reason=why)
        seq, nonce = (req.seq, req.nonce) if isinstance(req, OpenRequest) else (-1, b"")
        return OpenReply(node=node, t=now, seq=seq, nonce=nonce, status="error", reason=why)

    def _fault(self, where: str, reason: str, exc: Exception | None = None, **detail: Any) -> None:
        with self._faults_lock:
            counter = self.faults[where]
            counter[reason] += 1
            n = counter[reason]
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: counted in full, logged sparsely
            log.error(
                f"{where} fault",
                exc_info=exc if n == 1 else None,
                extra=fields(where=where, reason=reason, count=n, error=str(exc or ""), **detail),
            )

    def _mark_published(self, seq: int) -> None:
        """Publisher thread: remember the last signed head sent (what a restart skips)."""
        try:
            self.marks.mark_published(seq)
        except StoreError as e:  # a restart then republishes a little more: not fatal
            self._fault("publish", "mark_failed", error=str(e)[:300])

    def _rejected(self, where: str, err: WireError) -> None:
        """Log a rejection its Session counted: sparsely, a flood is counted in full."""
        n = self.rejects[where][err.reason]
        if n & (n - 1) == 0:  # 1, 2, 4, 8...
            log.warning(
                f"rejected {where} frame",
                extra=fields(where=where, reason=err.reason, detail=err.detail[:200], count=n),
            )

    def _on_intake(self, got: Received) -> None:
        msg, err = got.msg, got.error
        top = self.cfg.batching.max_tokens_limit
        if isinstance(msg, SubmitRequest) and not 1 <= msg.max_tokens <= top:
            err = WireError("bad_max_tokens", f"max_tokens {msg.max_tokens}: use 1 to {top}")
            self.intake.reject(err)
        if err is not None:
            self._rejected("intake", err)
            reply = SubmitReply(
                node=self.cfg.node, t=time.time(), request_id="", status="rejected", reason=str(err)
            )
            self.intake.send(reply, got.envelope)
            return
        assert isinstance(msg, SubmitRequest)
        why = self.worker.refusing
        if not why and self.worker.jobs.qsize() >= self.cfg.batching.max_queue:
            why = f"queue full ({self.cfg.batching.max_queue} waiting): retry later"
        if why:
            reply = SubmitReply(
                node=self.cfg.node,
                t=time.time(),
                request_id=msg.request_id,
                status="rejected",
                reason=why,
            )
            self.intake.send(reply, got.envelope)
            return
        # The client's bytes as received: the manifest's digest binds what the client sent.
        # The client is the Curve key ZAP authenticated (Z85), "" without Curve; it goes into
        # the request's digest in the batch manifest (fpmon/manifest.py).
        request = ClientRequest(client=got.user_id, submit=got.body[-1])
        self.worker.jobs.put(Job(got.envelope, msg, time.monotonic(), request))

    def _on_open(self, got: Received) -> None:
        msg = got.msg
        if got.error is not None:
            self._rejected("openings", got.error)
            reply = OpenReply(
                node=self.cfg.node,
                t=time.time(),
                seq=-1,
                nonce=b"",
                status="error",
                reason=str(got.error),
            )
            self.openings.send(reply, got.envelope)
            return
        if isinstance(msg, LinksRequest):
            links = answer_links(self.reader, msg, self.cfg.node, self.signer)
            self.openings.send(links, got.envelope)
            return
        assert isinstance(msg, OpenRequest)
        opened = self.parts.opener(self.reader, msg, self.cfg.node)
        if opened.fault:
            self._fault("openings", opened.fault, seq=msg.seq, detail=opened.reply.reason)
        self.openings.send(opened.reply, got.envelope)

    def status(self) -> dict[str, Any]:
        with self._faults_lock:
            faults = {k: dict(v) for k, v in self.faults.items()}
        return {
            "node": self.cfg.node,
            "pid": os.getpid(),
            "started_at": self.started,
            "updated_at": time.time(),  # readers judge staleness by it (`agent stats`)
            "status_every_s": STATUS_EVERY_S,
            "served": self.worker.served,
            "tokens": self.worker.tokens,
            "published": self.publisher.published,
            "republished": self.publisher.republished,
            "heads": self.publisher.heads,
            "rejects": {k: v.snapshot() for k, v in self.rejects.items()},
            "faults": faults,
            "auth_denied": self.security.counts(),
            "refusing": self.worker.refusing,
            "log_verified": {"rows": self.verified.rows, "seconds": self.verified.seconds},
            "endpoints": self.endpoints,
            "pubkey": signing_public_hex(self.key),
            "setup": self.engine.setup.summary(),
            "torch_threads": _torch_threads(),
            "probes": self.probes.to_map(),
            "redteam": list(self.parts.behaviours),
            **self.worker.status(),
        }

    def _write_status(self) -> None:
        now = time.monotonic()
        if now < self._next_status and not self.stop_event.is_set():
            return
        self._next_status = now + STATUS_EVERY_S
        try:
            write_atomic(self.cfg.status_path, json.dumps(self.status()))
        except Exception as e:  # OSError on a full disk; never let the status stop serving
            self._status_failed(e)
        else:
            self._status_written()

    def _status_failed(self, e: Exception) -> None:
        with self._faults_lock:
            self.faults["status"]["write_failed"] += 1
        if not self._status_failing:  # once per change of state: a full disk lasts a while
            self._status_failing = True
            log.error(
                "cannot write status file: it keeps its last content, which `fpmon agent stats` "
                "reports as stale",
                extra=fields(path=str(self.cfg.status_path), error=str(e)),
            )

    def _status_written(self) -> None:
        if self._status_failing:
            self._status_failing = False
            log.warning(
                "status file written again",
                extra=fields(failures=self.faults["status"]["write_failed"]),
            )


def write_atomic(path: Path, text: str) -> None:
    """Readers see the old file or the new one, never a torn one (temp + rename)."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()  # give back what a partial write took on a full disk
        raise
