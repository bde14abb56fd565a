"""The replay daemon: wires intake, sampling, openings, the replay worker, store and sockets.

One thread owns every socket and the store (the poll loop below); the replay worker thread only
judges. Every decision that must survive a crash is written before it is acted on: a sampled
commit is a pending row before its opening is sent, an opened record is stored before it is
queued, and a verdict replaces its pending row in one transaction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import msgspec
import zmq

from fpmon import config, signing
from fpmon.deafness import SubWatchdog
from fpmon.replay import calibration as calibration_mod
from fpmon.replay.accounting import ReferenceMeter
from fpmon.replay.chains import Break
from fpmon.replay.challenge_client import ChallengeClient, Plan
from fpmon.replay.challenge_judge import Band
from fpmon.replay.challenge_schedule import ChallengeSchedule
from fpmon.replay.challenges import ChallengeBook
from fpmon.replay.config import ReplayConfig
from fpmon.replay.engines import EngineCache, Factory, reference_factory
from fpmon.replay.intake import TOPICS, Intake
from fpmon.replay.judge import Judge, Judgement, JudgeOptions, verdict_for
from fpmon.replay.metrics import Metrics
from fpmon.replay.openings import Opener, Outcome
from fpmon.replay.repair import Repairer
from fpmon.replay.rows import BLIND_SPOT
from fpmon.replay.sampling import Sampler
from fpmon.replay.state import StateServer
from fpmon.replay.store import Store
from fpmon.replay.summary import VERIFIED, node_summaries
from fpmon.replay.timing import Finding, TimingModel, verifier_load
from fpmon.replay.watch import TICK_S, Raise, Watch
from fpmon.replay.worker import ReplayWorker
from fpmon.session import CurveClient, Session
from fpmon.transport import bind, curve_client
from fpmon.wire import (
    ALERT_KINDS,
    Alert,
    Commit,
    Evidence,
    Limits,
    StateReply,
    Verdict,
    encode,
)
from fpmon.wire.codec import RejectCounter
from fpmon.wire.messages import AlertKind, Severity, Status

log = logging.getLogger("fpmon.replay")

SEVERITY: dict[str, Severity] = {
    "chain_break": "critical",
    "bad_opening": "critical",
    "mismatch": "critical",
    "unopened": "warning",
    "unverifiable": "info",
    "deaf": "critical",
    "covert_rows": "critical",
}
SUBSCRIBE = (b"commit", b"head", b"telemetry")
T = TypeVar("T")


def _profile(cfg: ReplayConfig) -> dict[str, Any] | None:
    path = cfg.timing.interference_profile
    if path is None:
        return None
    import json

    from fpmon.errors import FpmonError

    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError) as e:
        raise FpmonError(
            f"{path}: cannot read the interference profile ({e}); write it with "
            "`fpmon replay interference --out`"
        ) from None


class ReplayDaemon:
    def __init__(self, cfg: ReplayConfig, engine_factory: Factory = reference_factory) -> None:
        self.cfg = cfg
        self.limits = Limits(max_bytes=cfg.limits.max_message_bytes)
        # Monitors pin this key: a verdict or alert it did not sign is dropped there.
        self.signing_key = signing.load_or_create_key(cfg.replay.signing_key_path)
        self.verifier_public = signing.public_bytes(self.signing_key)
        self.store = Store(cfg.replay.store)
        s = cfg.sampling
        self.sampler = Sampler(s.secret, s.rate, s.suspect_rate, s.suspect_window_s)
        self.intake = Intake(
            {n.name: n.sign_pubkey for n in cfg.nodes},
            self.sampler,
            self.limits,
            {n.name: n.curve_pubkey for n in cfg.nodes},
        )
        self.calibration = calibration_mod.load(cfg.replay.calibration)
        self.engines = EngineCache(cfg.models, cfg.replay.device, engine_factory)
        opts = JudgeOptions(
            cfg.attribution.enabled,
            cfg.attribution.fields,
            cfg.attribution.batch_sizes,
            cfg.attribution.max_candidates,
            cfg.limits.caps,
            cfg.limits.manifests,
            node_manifests={n.name: n.manifests for n in cfg.nodes if n.manifests is not None},
        )
        self.judge = Judge(self.engines, self.calibration, opts, cfg.replay.name)
        self.judge.rows = self.intake.rows  # link opened rows to their siblings' commits
        self.judge.meter = ReferenceMeter(cfg.replay.device)  # GPM around replays, where any
        self.worker = ReplayWorker(self.judge, cfg.queue.max)
        self.timing = TimingModel(
            cfg.timing.margin, cfg.timing.min_samples, cfg.timing.capacity_margin, _profile(cfg)
        )
        self.watch = Watch(cfg, self.intake, self.timing)
        self.metrics = Metrics()
        self.stop_event = threading.Event()
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.endpoints: dict[str, str] = {}
        self.shed: Counter[str] = Counter()
        self._shed_window: Counter[str] = Counter()
        self.state_rejects = RejectCounter()
        self.internal_errors: Counter[str] = Counter()  # by where:exception, see `step`
        self._backlog: list[tuple[Commit, bytes]] = []
        self._reported: dict[tuple[Any, str], int] = {}
        self._started = False
        self.challenges: ChallengeBook | None = None
        self.challenger: ChallengeClient | None = None
        ch = cfg.challenges
        if ch.enabled:
            # The schedule's epoch: logged, and in every challenge's evidence, so an auditor
            # holding the key re-derives every send time and prompt.
            self.challenge_epoch = int(time.time())
            self.challenges = ChallengeBook(
                [n.name for n in cfg.nodes if n.intake],
                Band(ch.max_ratio, ch.slack_s),
                epoch=self.challenge_epoch,
                confirm=ch.confirm,
                window=ch.window,
                verdict_timeout_s=ch.verdict_timeout_s,
            )
            self.intake.on_commit = self.challenges.on_commit

    # --- setup ----------------------------------------------------------------------------
    def _curve(self) -> dict[str | None, tuple[str, bytes, bytes]]:
        if self.cfg.replay.curve_secret_file is None:
            return {}
        import zmq.auth

        cert = self.cfg.replay.curve_secret_file
        config.check_private(cert, "Curve secret key")
        public, secret = zmq.auth.load_certificate(str(cert))
        if secret is None:
            from fpmon.errors import FpmonError

            raise FpmonError(
                f"{self.cfg.replay.curve_secret_file} holds no secret key: pass the "
                "daemon's .key_secret certificate"
            )
        keys: dict[str | None, tuple[str, bytes, bytes]] = {
            n.name: (n.curve_pubkey, public, secret) for n in self.cfg.nodes if n.curve_pubkey
        }
        if self.cfg.replay.hub_curve_pubkey:  # key None: the hub, for our SUB and our PUB to it
            keys[None] = (self.cfg.replay.hub_curve_pubkey, public, secret)
        return keys

    def _challenge_curve(self) -> dict[str, tuple[str, bytes, bytes]]:
        """Our client keys at the nodes' intakes: `[challenges] curve_secret_file`, else the
        daemon's own certificate. A node sees which key a request comes with: one used by
        ordinary clients too hides the challenges better (docs/REPLAY.md)."""
        cert = self.cfg.challenges.curve_secret_file or self.cfg.replay.curve_secret_file
        if cert is None:
            return {}
        import zmq.auth

        config.check_private(cert, "Curve secret key")
        public, secret = zmq.auth.load_certificate(str(cert))
        if secret is None:
            from fpmon.errors import FpmonError

            raise FpmonError(f"{cert} holds no secret key: pass a .key_secret certificate")
        return {n.name: (n.curve_pubkey, public, secret) for n in self.cfg.nodes if n.curve_pubkey}

    def _start_challenges(self) -> None:
        if self.challenges is None:
            return
        cfg, ch = self.cfg, self.cfg.challenges
        self.challenger = ChallengeClient(
            self.ctx,
            {n.name: n.intake for n in cfg.nodes if n.intake},
            ChallengeSchedule(cfg.sampling.secret, ch.mean_interval_s, self.challenge_epoch),
            Plan(ch.client, ch.pool, ch.token_choices, ch.timeout_s),
            self.limits,
            self.challenges.register,
            curve=self._challenge_curve(),
        )
        self.challenger.start()
        log.info(
            "challenges on: %d nodes, mean interval %g s, schedule epoch %d",
            len(self.challenges.nodes),
            ch.mean_interval_s,
            self.challenge_epoch,
        )

    def start(self) -> None:
        """Bind and connect every socket, restore persisted state, start the worker."""
        ctx, cfg = self.ctx, self.cfg
        curve = self._curve()
        self.subs: dict[zmq.Socket[Any], str | None] = {}  # by the socket the poller returns
        self.watchdogs: dict[str | None, SubWatchdog[Session]] = {}
        targets = (
            [(None, cfg.replay.hub)] if cfg.replay.hub else [(n.name, n.publish) for n in cfg.nodes]
        )
        for node, ep in targets:
            make = partial(self._make_sub, ep, curve.get(node))
            w = SubWatchdog(make, cfg.limits.deaf_after_s, self._resubscribed)
            self.watchdogs[node] = w
            self.subs[w.sock.socket] = node
        self.opener = Opener(
            ctx,
            {n.name: n.openings for n in cfg.nodes},
            verifier=cfg.replay.name,
            deadline_s=cfg.openings.deadline_s,
            retries=cfg.openings.retries,
            limits=self.limits,
            curve=curve,
            grace_s=cfg.openings.grace_s,
            max_late=cfg.openings.max_late,
        )
        self.repair = Repairer(
            self.intake.chains,
            self.opener.send,
            cfg.replay.name,
            retry_s=max(cfg.openings.deadline_s, 0.5),
            timeout_s=cfg.openings.repair_timeout_s,
        )
        self.pub = ctx.socket(zmq.PUB)
        self.pub.linger = 0
        if cfg.replay.hub_xsub:
            if None in curve:
                curve_client(self.pub, *curve[None])
            self.pub.connect(cfg.replay.hub_xsub)
        else:
            self.endpoints["publish"] = bind(self.pub, cfg.replay.publish, "[replay] publish")
        self.state = StateServer(
            ctx,
            cfg.replay.state,
            self.state_reply,
            lambda: self.store.sid,
            self.state_rejects,
            rate_per_s=cfg.limits.state_rate_per_s,
            burst=cfg.limits.state_burst,
            curve=self._state_curve(),
        )
        self.state_sock = self.state.sock
        self.endpoints["state"] = self.state.endpoint
        self.poller = zmq.Poller()
        for s in [*self.subs, *self.opener.node_of, self.state_sock]:
            self.poller.register(s, zmq.POLLIN)
        if cfg.replay.metrics_port:
            self.metrics.serve(cfg.replay.metrics_port)
        self._restore()
        self.worker.start()
        self._start_challenges()
        self._started = True
        log.info("replay daemon up: %s", self.endpoints)

    def _state_curve(self) -> tuple[bytes, bytes, Path] | None:
        if self.cfg.replay.curve_secret_file is None or self.cfg.replay.state_clients_dir is None:
            return None
        import zmq.auth

        public, secret = zmq.auth.load_certificate(str(self.cfg.replay.curve_secret_file))
        assert secret is not None  # _curve() has refused a certificate without one
        return public, secret, self.cfg.replay.state_clients_dir

    def _make_sub(self, ep: str, curve: tuple[str, bytes, bytes] | None) -> Session:
        # Our SUB is a Curve client pinning this node's (or the hub's) server key: whatever
        # arrives on it was sent by the holder of that key.
        s = Session(
            self.ctx,
            zmq.SUB,
            limits=self.limits,
            expect=TOPICS,
            security=CurveClient(*curve) if curve is not None else None,
        )
        s.socket.rcvhwm = 200_000
        for topic in SUBSCRIBE:
            s.socket.subscribe(topic)
        s.connect(ep)
        return s

    def _resubscribed(self, old: Session, new: Session) -> None:
        self.poller.unregister(old.socket)
        self.poller.register(new.socket, zmq.POLLIN)
        self.subs[new.socket] = self.subs.pop(old.socket)

    def _restore(self) -> None:
        for node, (seq, chain) in self.store.chains().items():
            if node in self.intake.chains.nodes:
                self.intake.chains.restore(node, seq, chain)
        for node, counts in self.store.counters().items():
            st = self.intake.stats.get(node)
            if st is not None:
                st.commits = counts.get("commits", 0)
                st.sampled = counts.get("sampled", 0)
        for commit, stage, record in self.store.pending():
            if commit.node not in self.intake.stats:
                continue
            if stage == "replay" and record is not None:
                self._backlog.append((commit, record))
            else:
                self.opener.request(commit)

    # --- the loop -------------------------------------------------------------------------
    def run(self) -> None:
        if not self._started:
            self.start()
        next_tick = time.monotonic() + TICK_S
        try:
            while not self.stop_event.is_set():
                self.step(timeout_ms=20)
                if time.monotonic() >= next_tick:
                    self.tick()
                    next_tick = time.monotonic() + TICK_S
        finally:
            self.close()

    def step(self, timeout_ms: int = 20) -> None:
        """One poll round. Each message and each outcome is handled in isolation: one that
        raises (a bug a crafted frame found) is counted and logged, never fatal."""
        events = dict(self.poller.poll(timeout_ms))
        outcomes: list[Outcome] = []
        for sock in events:
            if sock in self.subs:
                self._drain_sub(self.subs[sock])
            elif sock is self.state_sock:
                self._isolated("state", self.state.answer)
            else:
                outcomes += self._isolated("openings", self.opener.on_readable, sock) or []
        outcomes += self._isolated("openings", self.opener.tick) or []
        self._isolated("repair", self._handle_links)
        self._isolated("intake", self._handle_intake)
        self._isolated("challenges", self._handle_challenges)
        for o in outcomes:
            self._isolated("outcome", self._outcome, o)
        self._isolated("backlog", self._feed_backlog)
        self._isolated("results", self._handle_results)

    def _isolated(self, where: str, fn: Callable[..., T], *args: Any) -> T | None:
        try:
            return fn(*args)
        except Exception as e:
            self._internal_error(where, e)
            return None

    def _internal_error(self, where: str, e: Exception) -> None:
        key = f"{where}:{type(e).__name__}"
        self.internal_errors[key] += 1
        n = self.internal_errors[key]
        if n & (n - 1) == 0:  # 1, 2, 4, 8...: counted in full, logged sparsely
            log.error("message handling failed (%s, %d so far)", key, n, exc_info=e)

    def _drain_sub(self, via: str | None) -> None:
        handle = self.intake.received
        watchdog = self.watchdogs[via]
        watchdog.heard()  # readable: the connection delivers (garbage counts too)
        for _ in range(5000):
            got = watchdog.sock.recv()
            if got is None:
                return
            try:
                handle(got, via)
            except Exception as e:
                self._internal_error("subscribe", e)

    def _handle_links(self) -> None:
        links, self.opener.links = self.opener.links, []
        for node, reply in links:
            res = self.repair.on_reply(node, reply)
            if res is not None:
                self.intake.apply(node, res, repaired=True)

    def _handle_intake(self) -> None:
        breaks, samples, telemetry = self.intake.drain()
        for brk, commit in breaks:
            self._chain_break(brk, commit)
        if samples:
            room = self.cfg.openings.max_inflight - len(self.opener.pending)
            take, shed = samples[: max(room, 0)], samples[max(room, 0) :]
            self.store.add_pending(take)
            for c in take:
                self.opener.request(c)
            for c in shed:
                self._shed(c)
        for t in telemetry:
            self.watch.telemetry(t.node, t)

    def _chain_break(self, brk: Break, commit: Commit | None) -> None:
        v = Verdict(
            node=brk.node,
            t=time.time(),
            seq=brk.seq,
            status="chain_break",
            request_id=commit.request_id if commit else "",
            declared=dict(commit.setup) if commit else {},
            reason=f"{brk.kind}: {brk.detail}",
            evidence=Evidence(chain_break=brk.kind),
        )
        self._verdict(v, commit.t if commit else None, alert_id=f"{brk.kind}:{brk.node}:{brk.seq}")

    def _outcome(self, o: Outcome) -> None:
        c = o.commit
        if o.kind == "opened":
            refused = self.judge.precheck(c)
            if refused is not None:  # beyond the caps: neither stored nor queued
                self._verdict(refused.verdict, c.t, suspect=True)
                return
            self.store.set_opened(c.node, c.seq, o.record or b"")
            if not self.worker.offer(c, o.record or b""):
                self.store.drop_pending(c.node, c.seq)
                self._shed(c)
            return
        status: Status
        severity: Severity | Literal[""] = ""
        if o.kind == "purged":
            status, (reason, severity) = "unopened", self._purged(c, o.reason)
        elif o.kind == "unknown":
            status, reason = "bad_opening", f"node denies a record it committed: {o.reason}"
        else:
            status, reason = o.kind, o.reason
        self._verdict(verdict_for(c, status, reason=reason), c.t, severity=severity)

    def _purged(self, c: Commit, why: str) -> tuple[str, Severity | Literal[""]]:
        """(reason, severity) for a record the node says it purged: under the configured
        minimum retention after commit it is a dodge (critical), else a plain `unopened`.

        Timed from the commit's `t`, the node's word, but never from later than the verifier
        first held the commit (a node clock running ahead must not shorten the age). A `t`
        earlier than its arrival is believed: commits fetched by gap repair after the
        verifier's downtime are legitimately old, and an honest node's purge of those is no
        dodge; a node back-dating `t` still gets `unopened` and is made suspect."""
        seen = self.store.pending_since(c.node, c.seq)
        age = time.time() - (c.t if seen is None else min(c.t, seen))
        if age < self.cfg.openings.min_retention_s:
            return (
                f"purged {age:.0f} s after commit, under the minimum retention of "
                f"{self.cfg.openings.min_retention_s:g} s: a record dodging its opening ({why})",
                "critical",
            )
        return f"purged by the node before it was opened: {why}", ""

    def _feed_backlog(self) -> None:
        while self._backlog and self.worker.offer(*self._backlog[0]):
            self._backlog.pop(0)

    def _handle_results(self) -> None:
        while True:
            try:
                j: Judgement = self.worker.results.get_nowait()
            except queue.Empty:
                return
            v = j.verdict
            if v.replay_s:
                self.metrics.replay_s.observe(v.replay_s)
            self._verdict(
                v,
                j.commit_t or None,
                suspect=j.suspect,
                reference_s=j.reference_s,
                committed_s=j.committed_s,
                output_ids=j.output_ids,
            )
            f = self.timing.observe(
                v.node,
                j.committed_s,
                j.reference_s,
                j.tokens,
                j.jitter_rel,
                not v.cross_gpu,
                gpu=self.watch.accounting.window(v.node),
                verifier_load=verifier_load(),
            )
            if f is not None:
                self._finding(f)
            self.watch.judged(v.node, j.reference_s, j.tokens, j.activity, j.cpu_s)

    # --- outputs --------------------------------------------------------------------------
    def _verdict(
        self,
        v: Verdict,
        commit_t: float | None,
        alert_id: str = "",
        *,
        suspect: bool = False,
        severity: Severity | Literal[""] = "",
        reference_s: float = 0.0,
        output_ids: tuple[int, ...] | None = None,
        committed_s: float = 0.0,
    ) -> None:
        """Store and publish `v`, alert what is not a match. `suspect`: a finding even where
        the status alone is not one (an `unverifiable` the node chose: work beyond the caps, a
        model the verifier has no reference for), alerted as a warning at least; `severity`
        overrides the status's default severity for its alert. `reference_s`/`committed_s`:
        the replay's timings, for a challenge's record."""
        if suspect and not severity and SEVERITY.get(v.status) == "info":
            severity = "warning"
        changes: dict[str, Any] = {"t": v.t or time.time()}
        if commit_t is not None:  # kept with the verdict: commit-to-verdict latency, afterwards
            changes["evidence"] = msgspec.structs.replace(v.evidence, commit_t=commit_t)
        v = signing.sign(self.signing_key, msgspec.structs.replace(v, **changes))
        if not self.store.add_verdict(v):
            # Already judged (work redone after a restart): never written twice. A chain break
            # found later for a judged seq (a bad head) is still a finding: alert it.
            if v.status == "chain_break":
                self.alert(
                    "chain_break",
                    v.node,
                    f"{v.node} seq {v.seq}: {v.reason}",
                    seq=v.seq,
                    alert_id=alert_id,
                )
            return
        self.pub.send_multipart(encode(v))
        self.metrics.verdicts.labels(v.status).inc()
        if commit_t is not None:
            self.metrics.latency_s.observe(max(0.0, time.time() - commit_t))
        if v.status not in ("match", "within_noise"):
            if v.status != "unverifiable" or suspect:
                self.sampler.suspect(v.node)
            if v.status in ALERT_KINDS:
                details: dict[str, Any] = {
                    "attribution": v.attribution[0].field if v.attribution else ""
                }
                if v.status == "covert_rows":  # the message is cut short; the blind spot is not
                    details["blind_spot"] = BLIND_SPOT
                self.alert(
                    cast(AlertKind, v.status),  # a status that is also an alert kind (checked)
                    v.node,
                    f"{v.node} seq {v.seq}: {v.status}" + (f" — {v.reason}" if v.reason else ""),
                    seq=v.seq,
                    alert_id=alert_id or f"{v.status}:{v.node}:{v.seq}",
                    details=details,
                    severity=severity,
                )
        if self.challenges is not None:
            for r in self.challenges.verdict(v, reference_s, committed_s, output_ids):
                self._raise(r)

    def _handle_challenges(self) -> None:
        if self.challenges is None or self.challenger is None:
            return
        for r in self.challenges.drain(self.challenger.events):
            self._raise(r)

    def _raise(self, r: Raise) -> None:
        self.alert(
            r.kind,
            r.node,
            r.message,
            seq=r.seq,
            alert_id=r.alert_id,
            details=r.details,
            severity=r.severity,
        )
        if r.kind in ("suspected_hidden_work", "served_mismatch"):
            self.sampler.suspect(r.node)

    def alert(
        self,
        kind: AlertKind,
        node: str,
        message: str,
        *,
        seq: int = -1,
        alert_id: str = "",
        details: dict[str, Any] | None = None,
        severity: Severity | Literal[""] = "",  # "": the kind's default
    ) -> None:
        a = Alert(
            node=node,
            t=time.time(),
            id=alert_id or f"{kind}:{node}:{time.time():.0f}",
            kind=kind,
            severity=severity or SEVERITY.get(kind, "warning"),
            message=message[:500],
            seq=seq,
            details=details or {},
        )
        a = signing.sign(self.signing_key, a)
        if self.store.add_alert(a):
            self.pub.send_multipart(encode(a))
            self.metrics.alerts.labels(kind).inc()

    def _finding(self, f: Finding) -> None:
        self.alert(
            f.kind,
            f.node,
            f.message,
            details=f.details,
            severity=f.severity,
            alert_id=f"{f.kind}:{f.node}:{time.time():.0f}",
        )

    def _shed(self, c: Commit) -> None:
        node = c.node
        if self.challenges is not None:
            self.challenges.dropped(c)  # the verifier's fault: never the node's
        self.shed[node] += 1
        self._shed_window[node] += 1
        self.metrics.shed.inc()

    # --- periodic -------------------------------------------------------------------------
    def tick(self) -> None:
        """Once a second: persist chain state, report shedding, floods, capacity, metrics."""
        now = time.time()
        chains = self.intake.chains.nodes
        self.store.save_chains({n: (c.seq, c.chain) for n, c in chains.items() if c.seq >= 0})
        self.store.save_counters(
            {n: {"commits": s.commits, "sampled": s.sampled} for n, s in self.intake.stats.items()}
        )
        for node, n in self._shed_window.items():
            self.alert(
                "shed",
                node,
                f"{n} sampled records of {node} not verified: replay "
                f"queue full ({self.cfg.queue.max}) or too many openings in flight",
                alert_id=f"shed:{node}:{now:.0f}",
                details={"shed": n},
            )
        self._shed_window.clear()
        for u in self.repair.tick():
            self.alert(
                "gap_unrepaired",
                u.node,
                f"{u.node}: seq {u.first}..{u.last} missing from the feed and not yet fetched "
                f"from its log ({u.attempts} requests over {u.waited_s:.0f} s, no answer): held, "
                "not judged; a node that is down or unreachable is not accused",
                seq=u.first,
                alert_id=f"gap_unrepaired:{u.node}:{u.first}",
                details={"first": u.first, "last": u.last, "attempts": u.attempts},
                severity="warning",
            )
        self._check_deaf()
        for r in self.watch.check(now):
            self._raise(r)
        self._tick_challenges()
        counts = self.store.verdict_counts()
        self.metrics.queue_depth.set(self.worker.depth() + len(self._backlog))
        self.metrics.openings.set(len(self.opener.pending))
        for node, st in self.intake.stats.items():
            verified = sum(counts.get(node, {}).get(s, 0) for s in VERIFIED)
            self.metrics.coverage.labels(node).set(verified / st.commits if st.commits else 0.0)
            self._report(self.metrics.commits, node, st.commits)
        rejects = Counter(self.intake.rejects) + self.opener.rejects + self.state_rejects
        for st in self.intake.stats.values():
            rejects.update(st.rejects)
        # Messages that passed the wire contract but raised inside: bugs, counted as rejects.
        rejects.update({f"internal:{k}": n for k, n in self.internal_errors.items()})
        if self.challenger is not None:
            rejects.update({f"challenge:{k}": n for k, n in self.challenger.rejects().items()})
        for reason, n in rejects.items():
            self._report(self.metrics.rejects, reason, n)

    def _tick_challenges(self) -> None:
        if self.challenges is None:
            return
        for r in self.challenges.tick():
            self._raise(r)
        for ratio in self.challenges.ratios:
            self.metrics.challenge_ratio.observe(ratio)
        self.challenges.ratios.clear()
        for outcome, n in self.challenges.totals().items():
            self._report(self.metrics.challenges, outcome, n)

    def _check_deaf(self) -> None:
        """A SUB silent for `deaf_after_s` is recreated; the blindness itself is an alert."""
        for via, w in self.watchdogs.items():
            silent = w.check()
            if silent is None:
                continue
            who = via or self.cfg.replay.name
            source = f"node {via}" if via else f"the hub {self.cfg.replay.hub}"
            self.alert(
                "deaf",
                who,
                f"heard nothing from {source} for {silent:.0f} s: subscription recreated "
                "(a dead connection, or every publisher down)",
                alert_id=f"deaf:{who}:{time.time():.0f}",
                details={"silent_s": round(silent, 1), "resubscribed": w.recreated},
                severity="critical" if via is None else "warning",
            )

    def _report(self, counter: Any, label: str, total: int) -> None:
        """Advance a labelled Prometheus counter to a running total kept elsewhere."""
        key = (counter, label)
        delta = total - self._reported.get(key, 0)
        if delta > 0:
            counter.labels(label).inc(delta)
            self._reported[key] = total

    # --- state (Clone pattern snapshot) ---------------------------------------------------
    def summary(self) -> dict[str, Any]:
        acc = self.watch.accounting
        return node_summaries(
            self.intake,
            self.store,
            self.sampler,
            self.shed,
            acc.describe,
            acc.window,
            self.challenges.summary if self.challenges is not None else None,
        )

    def state_reply(self, since: int = 0) -> StateReply:
        reply = StateReply(
            node=self.cfg.replay.name,
            t=time.time(),
            nodes=self.summary(),
            verdicts=self.store.verdicts(since_sid=since, limit=200),
            alerts=self.store.alerts(since_sid=since, limit=100),
            stream_seq=self.store.sid,
        )
        return signing.sign(self.signing_key, reply)

    # --- shutdown -------------------------------------------------------------------------
    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        if not self._started:
            self.store.close()
            return
        self._started = False
        try:
            self.tick()
        finally:
            if self.challenger is not None:
                self.challenger.stop()
                self.challenger.join(timeout=5)
            self.worker.stop()
            self.worker.join(timeout=30)
            self.opener.close()
            self.state.close()
            self.ctx.destroy(linger=0)
            self.store.close()
