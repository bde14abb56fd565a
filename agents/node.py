"""The agent process: wires store, engine loop, publisher, intake and openings together.

Threads: the main thread owns the intake and openings ROUTERs (and the watchdog); the engine
thread (`worker.Worker`) batches and runs the model; the publisher thread owns the PUB. Each
ZeroMQ socket is used by one thread only; they talk through an inproc PUSH/PULL and a queue.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from typing import Any

import zmq

from agents.config import AgentConfig
from agents.heads import HeadSigner
from agents.keys import load_signing_key, signing_public_hex
from agents.logs import fields
from agents.openings import answer, answer_links
from agents.publisher import Publisher
from agents.redteam import RedTeam
from agents.sdnotify import Notifier
from agents.security import Security, limit_untrusted
from agents.store import RecordLog
from agents.telemetry import TelemetrySource
from agents.worker import Job, Worker
from fpmon.engines.base import ProbeSpec, default_layers
from fpmon.errors import FpmonError
from fpmon.wire import (
    Limits,
    LinksReply,
    LinksRequest,
    OpenReply,
    OpenRequest,
    SubmitReply,
    SubmitRequest,
    WireError,
    decode,
    encode,
)
from fpmon.wire.codec import RejectCounter

log = logging.getLogger("fpmon.agent")

STATUS_EVERY_S = 1.0


def build_engine(cfg: AgentConfig, redteam: RedTeam) -> Any:
    import torch

    from fpmon.engines.hf import HFEngine

    e = redteam.actual_engine(cfg.engine)
    if e.threads:
        torch.set_num_threads(e.threads)
    if e.kind == "vllm":
        from fpmon.engines.vllm import VLLMEngine

        v = cfg.vllm
        return VLLMEngine(
            e.model,
            dtype=e.dtype,
            attn_impl=e.attn,
            device=e.device,
            compiled=e.compiled,
            max_num_batched_tokens=v.max_num_batched_tokens,
            max_num_seqs=v.max_num_seqs,
            kv_cache_bytes=v.kv_cache_bytes,
        )
    return HFEngine(
        e.model,
        dtype=e.dtype,
        attn_impl=e.attn,
        device=e.device,
        compiled=e.compiled,
        sdpa_backend=e.sdpa_backend,
    )


def probe_spec(cfg: AgentConfig, num_layers: int) -> ProbeSpec:
    p = cfg.probes
    layers = tuple(p.layers) if p.layers is not None else tuple(default_layers(num_layers))
    return ProbeSpec(layers, topk=p.topk, keys=p.keys, hidden=p.hidden, logits=p.logits)


def _split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (envelope, body). REQ peers add an empty delimiter; DEALERs do not."""
    if len(frames) >= 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]


def _torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _bind(sock: zmq.Socket[Any], endpoint: str, what: str) -> None:
    try:
        sock.bind(endpoint)
    except zmq.ZMQError as e:
        raise FpmonError(
            f"cannot bind the {what} socket to {endpoint} ({e}): is another agent running "
            f"there? change [endpoints] {what}"
        ) from None


class Agent:
    def __init__(self, cfg: AgentConfig, engine: Any = None) -> None:
        self.cfg = cfg
        self.redteam = RedTeam.from_config(cfg.redteam)
        self.redteam.announce(cfg.node)
        self.started = time.time()
        os.makedirs(cfg.state_dir, exist_ok=True)
        self.key = load_signing_key(cfg.security.keys_dir, cfg.state_dir)
        self.signer = HeadSigner(self.key, cfg.node)
        # Open the log before loading the model: a bad state directory fails in a second.
        store_kw = dict(
            node=cfg.node,
            synchronous=cfg.store.synchronous.upper(),
            hard_max_bytes=cfg.store.hard_max_bytes,
        )
        self.store = RecordLog(cfg.db_path, **store_kw)
        self.reader = RecordLog(cfg.db_path, **store_kw)  # the openings' own connection
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
        self.engine = engine if engine is not None else build_engine(cfg, self.redteam)
        self.probes = probe_spec(cfg, self.engine.num_layers)
        self.limits = Limits(max_bytes=cfg.security.max_msg_bytes)
        self.rejects = {"intake": RejectCounter(), "openings": RejectCounter()}
        self._bind_sockets()
        self.publisher = Publisher(
            self.pub,
            self.signer,
            head_seq=self.store.head_seq,
            head_chain=self.store.head_chain,
            head_every_s=cfg.publish.head_every_s,
            head_every_n=cfg.publish.head_every_n,
            telemetry=TelemetrySource(cfg.node),
            telemetry_every_s=cfg.publish.telemetry_every_s,
            redteam=self.redteam,
        )
        self.worker = Worker(
            cfg,
            self.engine,
            self.store,
            self.ctx,
            self.replies_endpoint,
            self.publisher.queue,
            self.redteam,
            self.probes,
        )
        self.stop_event = threading.Event()
        self.notifier = Notifier()
        self._next_status = 0.0
        self._stall_logged = False

    def _bind_sockets(self) -> None:
        cfg, sec = self.cfg, self.security
        self.intake = self.ctx.socket(zmq.ROUTER)
        self.openings = self.ctx.socket(zmq.ROUTER)
        for sock, domain, ep in (
            (self.intake, "intake", cfg.endpoints.intake),
            (self.openings, "openings", cfg.endpoints.openings),
        ):
            limit_untrusted(sock, cfg.security.max_msg_bytes)
            sock.setsockopt(zmq.ROUTER_MANDATORY, 0)  # a vanished client must not raise
            sec.server(sock, domain)
            _bind(sock, ep, domain)
        self.pub = self.ctx.socket(zmq.PUB)
        self.pub.sndhwm = 200_000  # bursts of commitments are not dropped by a slow subscriber
        self.pub.linger = 0
        if cfg.endpoints.hub:
            sec.client_of(self.pub, cfg.security.hub_public_key)
            self.pub.connect(cfg.endpoints.hub)
        else:
            sec.server(self.pub, "publish")
            _bind(self.pub, cfg.endpoints.publish, "publish")
        self.replies = self.ctx.socket(zmq.PULL)
        self.replies.linger = 0
        self.replies_endpoint = f"inproc://fpmon-replies-{id(self)}"
        self.replies.bind(self.replies_endpoint)
        self.endpoints = {
            "intake": self.intake.last_endpoint.decode(),
            "openings": self.openings.last_endpoint.decode(),
            "publish": cfg.endpoints.hub or self.pub.last_endpoint.decode(),
        }

    # -- main loop ---------------------------------------------------------------------------

    def run(self) -> int:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: self.stop_event.set())
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
        for s in (self.intake, self.openings, self.replies):
            poller.register(s, zmq.POLLIN)
        rc = 0
        try:
            while not self.stop_event.is_set():
                if self.worker.failed is not None or not self.worker.is_alive():
                    log.error("engine loop stopped: exiting so the service restarts")
                    rc = 1
                    break
                for sock, _ in poller.poll(100):
                    if sock is self.intake:
                        self._on_intake(sock.recv_multipart())
                    elif sock is self.openings:
                        self._on_open(sock.recv_multipart())
                    else:
                        self.intake.send_multipart(self.replies.recv_multipart())
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
            self.worker.stop()
            self.worker.join(timeout=30)
            # Replies for work already durable still go out before the sockets close.
            while self.replies.poll(0):
                self.intake.send_multipart(self.replies.recv_multipart())
            self.publisher.stop()
            pub_thread.join(timeout=10)
            self._write_status()
            for s in (self.intake, self.openings, self.replies):
                s.close(linger=0)
            self.security.stop()
            self.reader.close()
            self.ctx.term()
            log.info("agent stopped", extra=fields(node=self.cfg.node, rc=rc))
        return rc

    def stop(self) -> None:
        self.stop_event.set()

    def _reject(self, where: str, err: WireError) -> None:
        counter = self.rejects[where]
        counter.add(err)
        n = counter[err.reason]
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: a flood is counted in full, logged sparsely
            log.warning(
                f"rejected {where} frame",
                extra=fields(where=where, reason=err.reason, detail=err.detail[:200], count=n),
            )

    def _on_intake(self, frames: list[bytes]) -> None:
        env, body = _split_envelope(frames)
        try:
            msg = decode(body, self.limits, expect=(SubmitRequest.TOPIC,))
            assert isinstance(msg, SubmitRequest)
            if not 1 <= msg.max_tokens <= self.cfg.batching.max_tokens_limit:
                raise WireError(
                    "bad_max_tokens",
                    f"max_tokens {msg.max_tokens}: use 1 to {self.cfg.batching.max_tokens_limit}",
                )
        except WireError as e:
            self._reject("intake", e)
            reply = SubmitReply(
                node=self.cfg.node, t=time.time(), request_id="", status="rejected", reason=str(e)
            )
            self.intake.send_multipart([*env, *encode(reply)])
            return
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
            self.intake.send_multipart([*env, *encode(reply)])
            return
        self.worker.jobs.put(Job(env, msg, time.monotonic()))

    def _on_open(self, frames: list[bytes]) -> None:
        env, body = _split_envelope(frames)
        try:
            msg = decode(body, self.limits, expect=(OpenRequest.TOPIC, LinksRequest.TOPIC))
        except WireError as e:
            self._reject("openings", e)
            reply = OpenReply(
                node=self.cfg.node, t=time.time(), seq=-1, nonce=b"", status="error", reason=str(e)
            )
            self.openings.send_multipart([*env, *encode(reply)])
            return
        if isinstance(msg, LinksRequest):
            reply: OpenReply | LinksReply = answer_links(
                self.reader, msg, self.cfg.node, self.signer
            )
        else:
            assert isinstance(msg, OpenRequest)
            reply = answer(self.reader, msg, self.cfg.node, self.redteam)
        self.openings.send_multipart([*env, *encode(reply)])

    def status(self) -> dict[str, Any]:
        return {
            "node": self.cfg.node,
            "pid": os.getpid(),
            "started_at": self.started,
            "updated_at": time.time(),
            "served": self.worker.served,
            "tokens": self.worker.tokens,
            "published": self.publisher.published,
            "heads": self.publisher.heads,
            "rejects": {k: dict(v) for k, v in self.rejects.items()},
            "auth_denied": self.security.counts(),
            "refusing": self.worker.refusing,
            "endpoints": self.endpoints,
            "pubkey": signing_public_hex(self.key),
            "setup": self.engine.setup.summary(),
            "torch_threads": _torch_threads(),
            "probes": self.probes.to_map(),
            "redteam": self.redteam.behaviours(),
        }

    def _write_status(self) -> None:
        now = time.monotonic()
        if now < self._next_status and not self.stop_event.is_set():
            return
        self._next_status = now + STATUS_EVERY_S
        path = self.cfg.status_path
        tmp = path.with_name(path.name + ".tmp")
        try:
            tmp.write_text(json.dumps(self.status()))
            tmp.replace(path)
        except OSError as e:
            log.warning("cannot write status file", extra=fields(path=str(path), error=str(e)))
