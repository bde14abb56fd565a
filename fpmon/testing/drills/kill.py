"""The kill drill: SIGKILL the hub, an agent or the daemon at random under load; check the fleet.

A hub, N honest agents and the replay daemon (subscribed through the hub) run as real
processes on loopback (`procs.ProcFleet`); a load generator keeps requests in flight to every
agent; a collector subscribes to the hub (commit, verdict, alert) and polls the daemon's state
ROUTER. The drill then kills one component at a time (seeded choice and timing), restarts it
after a short random delay, and times how long it takes to be useful again:

  agent   restart -> its first `ok` SubmitReply
  hub     restart -> the daemon's commit count grows again (commits reach it through the hub)
  replay  restart -> its state ROUTER answers; and -> its first new verdict on the stream

At the end the load stops, the fleet settles (the daemon has seen every agent's last seq and
its pending work is done, bounded) and the invariants are checked:

  lost        every acknowledged (status ok) seq is in that agent's log under its request id;
              every log is gapless from 0 and its chain recomputes (fpmon.chain.next_chain)
  forks       no (node, seq) with two chains: published commits, the daemon's chain state and
              pending rows all agree with the agent's log; no `fork` verdict
  duplicates  at most one verdict per (node, seq) in the store; none published twice with
              different statuses
  chain_break no chain_break verdict or alert at all (every agent is honest)
  crashes     nothing exited on its own; every restart recovered within the bound
"""

from __future__ import annotations

import bisect
import random
import sqlite3
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import zmq

from fpmon.chain import GENESIS, next_chain
from fpmon.monitor.loadgen import PROMPTS
from fpmon.testing.drills.procs import ProcFleet, StateClient, wait_for
from fpmon.wire import (
    STATUSES,
    Alert,
    Commit,
    StateReply,
    SubmitReply,
    SubmitRequest,
    Verdict,
    WireError,
    decode,
    encode,
)

INVARIANTS = ("lost", "forks", "duplicate_verdicts", "chain_break", "crashes")


@dataclass
class DrillParams:
    kills: int = 40
    agents: int = 3
    seed: int = 1
    rate: float = 2.0  # requests per second per agent
    in_flight: int = 2  # requests outstanding per agent
    max_tokens: int = 6
    sampling_rate: float = 0.3
    restart_delay_s: tuple[float, float] = (0.2, 2.0)
    between_s: tuple[float, float] = (0.5, 3.0)  # after a recovery, before the next kill
    weights: dict[str, float] = field(
        default_factory=lambda: {"hub": 1.0, "agent": 1.0, "replay": 1.0}
    )
    recovery_timeout_s: float = 60.0
    settle_s: float = 120.0
    workdir: Path | None = None


@dataclass
class KillEvent:
    n: int
    target: str  # hub, replay or an agent's name
    kind: str  # hub, agent, replay
    t_kill: float
    t_restart: float = 0.0
    recovery: dict[str, float | None] = field(default_factory=dict)
    error: str = ""


@dataclass
class DrillResult:
    params: DrillParams
    workdir: Path
    events: list[KillEvent]
    duration_s: float
    load: dict[str, Any]
    logs: dict[str, dict[str, Any]]
    verdicts: Counter[str]
    alerts: Counter[str]
    stream: dict[str, int]
    violations: dict[str, list[str]]
    settle: dict[str, Any]
    breaks: list[dict[str, Any]] = field(default_factory=list)  # chain_break findings
    warnings: list[str] = field(default_factory=list)  # other findings on honest nodes

    @property
    def ok(self) -> bool:
        return not any(self.violations.values())

    def recovery(self) -> dict[str, list[float]]:
        """Recovery times by what was measured: agent, hub, replay_state, replay_verdict."""
        out: dict[str, list[float]] = defaultdict(list)
        for e in self.events:
            for k, v in e.recovery.items():
                if v is not None:
                    out[k].append(v)
        return dict(out)


# --- load ---------------------------------------------------------------------------------
class LoadGen(threading.Thread):
    """Keeps `in_flight` requests outstanding to every agent at up to `rate`/s each.

    Records every `ok` reply's (seq, request id) as acknowledged. DEALERs are ZMQ_IMMEDIATE:
    nothing queues for a dead agent; a request whose agent died is forgotten after `timeout_s`.
    """

    def __init__(self, intakes: dict[str, str], p: DrillParams, timeout_s: float = 15.0) -> None:
        super().__init__(name="drill-load", daemon=True)
        self.intakes, self.p, self.timeout_s = intakes, p, timeout_s
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.acked: dict[str, dict[int, str]] = {n: {} for n in intakes}
        self.conflicts: list[str] = []  # one seq acknowledged for two requests
        self.ok_times: dict[str, list[float]] = {n: [] for n in intakes}
        self.sent = 0
        self.rejected: Counter[str] = Counter()
        self.unanswered = 0
        self._resets: set[str] = set()

    def reset(self, node: str) -> None:
        """Forget requests outstanding to `node` (it was killed: they will never be answered)."""
        with self.lock:
            self._resets.add(node)

    def first_ok_after(self, node: str, t: float) -> float | None:
        with self.lock:
            ts = self.ok_times[node]
            i = bisect.bisect_right(ts, t)
            return ts[i] if i < len(ts) else None

    def run(self) -> None:
        ctx = zmq.Context()
        socks: dict[str, zmq.Socket[Any]] = {}
        for node, ep in self.intakes.items():
            s = ctx.socket(zmq.DEALER)
            s.linger = 0
            s.immediate = True
            s.connect(ep)
            socks[node] = s
        by_sock = {s: n for n, s in socks.items()}
        poller = zmq.Poller()
        for s in socks.values():
            poller.register(s, zmq.POLLIN)
        rng = random.Random(self.p.seed + 1)
        outstanding: dict[str, dict[str, float]] = {n: {} for n in socks}
        next_at = dict.fromkeys(socks, time.monotonic())
        try:
            while not self.stop_event.is_set():
                now = time.monotonic()
                with self.lock:
                    resets, self._resets = self._resets, set()
                for n in resets:
                    outstanding[n].clear()
                for node, s in socks.items():
                    pend = outstanding[node]
                    for rid, t in list(pend.items()):
                        if now - t > self.timeout_s:
                            del pend[rid]
                            self.unanswered += 1
                    if len(pend) >= self.p.in_flight or now < next_at[node]:
                        continue
                    rid = uuid.uuid4().hex
                    req = SubmitRequest(
                        node="drill-load",
                        t=time.time(),
                        request_id=rid,
                        prompt=f"{rng.choice(PROMPTS)} {rng.randrange(10**6)}",
                        max_tokens=self.p.max_tokens,
                    )
                    try:
                        s.send_multipart(encode(req), zmq.NOBLOCK)
                    except zmq.Again:  # agent not connected (down or restarting)
                        next_at[node] = now + 0.05
                        continue
                    self.sent += 1
                    pend[rid] = now
                    next_at[node] = max(next_at[node] + 1.0 / self.p.rate, now - 1.0)
                for s, _ in poller.poll(20):
                    self._reply(by_sock[s], s.recv_multipart(), outstanding)
        finally:
            for s in socks.values():
                s.close(0)
            ctx.term()

    def _reply(
        self, node: str, frames: list[bytes], outstanding: dict[str, dict[str, float]]
    ) -> None:
        try:
            r = decode(frames, expect=(SubmitReply.TOPIC,))
        except WireError as e:
            self.rejected[f"bad reply: {e.reason}"] += 1
            return
        assert isinstance(r, SubmitReply)
        outstanding[node].pop(r.request_id, None)
        if r.status != "ok":
            self.rejected[f"{r.status}: {r.reason[:60]}"] += 1
            return
        with self.lock:
            prev = self.acked[node].get(r.seq)
            if prev is not None and prev != r.request_id:
                self.conflicts.append(
                    f"{node} seq {r.seq} acknowledged for two requests: {prev} and {r.request_id}"
                )
            self.acked[node][r.seq] = r.request_id
            self.ok_times[node].append(time.monotonic())

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


# --- what the daemon and the hub show -----------------------------------------------------
class Collector(threading.Thread):
    """SUB on the hub (commit, verdict, alert) and the daemon's state ROUTER every `every_s`."""

    def __init__(self, hub_xpub: str, state: str, every_s: float = 0.25) -> None:
        super().__init__(name="drill-collect", daemon=True)
        self.hub_xpub, self.state, self.every_s = hub_xpub, state, every_s
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.commits: dict[tuple[str, int], set[bytes]] = defaultdict(set)
        self.verdicts: dict[tuple[str, int], list[str]] = defaultdict(list)
        self.verdict_times: list[float] = []
        self.alerts: dict[str, Alert] = {}
        self.alert_repeats = 0
        # (monotonic time received, total commits the daemon verified, chain head per node,
        # wall time of the latest telemetry it got from any node)
        self.states: list[tuple[float, int, dict[str, int], float]] = []
        self.rejects = 0

    def run(self) -> None:
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.rcvhwm = 0
        for topic in (b"commit", b"verdict", b"alert"):
            sub.subscribe(topic)
        sub.connect(self.hub_xpub)
        state = StateClient(self.state, ctx)
        next_state = 0.0
        try:
            while not self.stop_event.is_set():
                if sub.poll(10):
                    for _ in range(1000):
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self._message(frames)
                if time.monotonic() >= next_state:
                    reply = state.request(min(1.0, self.every_s * 4), since=1 << 62)
                    if reply is not None:
                        self._state(reply)
                    next_state = time.monotonic() + self.every_s
        finally:
            state.close()
            sub.close(0)
            ctx.term()

    def _message(self, frames: list[bytes]) -> None:
        try:
            m = decode(frames, expect=("commit", "verdict", "alert"))
        except WireError:
            self.rejects += 1
            return
        with self.lock:
            if isinstance(m, Commit):
                self.commits[(m.node, m.seq)].add(m.chain)
            elif isinstance(m, Verdict):
                self.verdicts[(m.node, m.seq)].append(m.status)
                self.verdict_times.append(time.monotonic())
            elif isinstance(m, Alert):
                if m.id in self.alerts:
                    self.alert_repeats += 1
                self.alerts[m.id] = m

    def _state(self, r: StateReply) -> None:
        heads = {n: s.chain_head_seq for n, s in r.nodes.items()}
        total = sum(s.commits for s in r.nodes.values())
        tele = max((s.last_telemetry_t for s in r.nodes.values()), default=0.0)
        with self.lock:
            self.states.append((time.monotonic(), total, heads, tele))

    def state_after(self, t: float) -> tuple[float, int, dict[str, int], float] | None:
        """The first state reply received after monotonic time `t`, if any yet."""
        with self.lock:
            i = bisect.bisect_right(self.states, t, key=lambda s: s[0])
            return self.states[i] if i < len(self.states) else None

    def commits_grew_after(self, t: float, baseline: int) -> float | None:
        with self.lock:
            i = bisect.bisect_right(self.states, t, key=lambda s: s[0])
            for when, total, _, _ in self.states[i:]:
                if total > baseline:
                    return when
        return None

    def telemetry_after(self, t: float, t_wall: float) -> float | None:
        """When a state reply first showed telemetry that reached the daemon after `t_wall`."""
        with self.lock:
            i = bisect.bisect_right(self.states, t, key=lambda s: s[0])
            for when, _, _, tele in self.states[i:]:
                if tele > t_wall:
                    return when
        return None

    def verdict_after(self, t: float) -> float | None:
        with self.lock:
            i = bisect.bisect_right(self.verdict_times, t)
            return self.verdict_times[i] if i < len(self.verdict_times) else None

    def last_heads(self) -> dict[str, int]:
        with self.lock:
            return dict(self.states[-1][2]) if self.states else {}

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)


# --- the drill ----------------------------------------------------------------------------
def run(p: DrillParams, say: Callable[[str], None] = lambda s: None) -> DrillResult:
    tmp = None
    if p.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fpmon-drill-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(p.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    fleet = ProcFleet(workdir, p.agents, sampling_rate=p.sampling_rate)
    rng = random.Random(p.seed)
    events: list[KillEvent] = []
    crashes: list[str] = []
    t0 = time.monotonic()
    load = collector = None
    try:
        say(f"starting hub, {p.agents} agents and the replay daemon in {workdir}")
        fleet.start()
        load = LoadGen(fleet.intake, p)
        collector = Collector(fleet.hub_xpub, fleet.state)
        collector.start()
        load.start()
        ready = wait_for(
            lambda: (
                all(load.first_ok_after(n, 0) for n in fleet.names) and collector.verdict_after(0)
            ),
            p.recovery_timeout_s * 2,
            0.2,
        )
        if not ready:
            crashes.append("the fleet never served every agent and produced a verdict at start")
        kinds = [k for k, w in p.weights.items() if w > 0]
        first = rng.sample(kinds, len(kinds))  # every kind is killed at least once, first
        for i in range(p.kills):
            time.sleep(rng.uniform(*p.between_s))
            kind = (
                first[i] if i < len(first) else rng.choices(kinds, [p.weights[k] for k in kinds])[0]
            )
            target = rng.choice(fleet.names) if kind == "agent" else kind
            delay = rng.uniform(*p.restart_delay_s)
            ev = KillEvent(i + 1, target, kind, time.monotonic())
            fleet.kill(target)
            if kind == "agent":
                load.reset(target)
            time.sleep(delay)
            baseline = 0
            if kind == "hub":  # the daemon's commit count once the hub is surely gone
                st = wait_for(partial(collector.state_after, ev.t_kill + 0.05), 5.0)
                baseline = st[1] if st else 0
            ev.t_restart = time.monotonic()
            try:
                fleet.restart(target, p.recovery_timeout_s)
            except Exception as e:
                ev.error = f"restart failed: {e}"
            _recover(ev, fleet, load, collector, p.recovery_timeout_s, baseline)
            events.append(ev)
            rec = ", ".join(
                f"{k} {v:.2f} s" if v is not None else f"{k} -" for k, v in ev.recovery.items()
            )
            say(f"kill {ev.n}/{p.kills}: {target} (down {delay:.1f} s) -> {rec} {ev.error}")
            for name, rc in fleet.crashed().items():  # died on its own meanwhile
                crashes.append(f"{name} exited on its own with {rc}: {fleet.child(name).tail(3)}")
                fleet.restart(name, p.recovery_timeout_s)
        say("stopping the load; settling")
        load.stop()
        settle = _settle(fleet, collector, p.settle_s)
        say(f"settled in {settle['seconds']:.1f} s ({settle['state']})")
        collector.stop()
        rcs = fleet.stop()
        for name, code in rcs.items():  # None: never started
            if code not in (0, None):
                crashes.append(f"{name} exited {code} on SIGTERM: {fleet.child(name).tail(3)}")
        result = _check(p, workdir, fleet, load, collector, events, crashes, settle)
        result.duration_s = time.monotonic() - t0
        return result
    finally:
        if load is not None and load.is_alive():
            load.stop()
        if collector is not None and collector.is_alive():
            collector.stop()
        fleet.force_stop()
        if tmp is not None:
            tmp.cleanup()


def _recover(
    ev: KillEvent,
    fleet: ProcFleet,
    load: LoadGen,
    col: Collector,
    timeout_s: float,
    baseline: int,
) -> None:
    t, left = ev.t_restart, lambda: max(0.1, ev.t_restart + timeout_s - time.monotonic())

    def since(when: float | None) -> float | None:
        return None if when is None else when - t

    if ev.kind == "agent":
        ev.recovery["agent"] = since(wait_for(lambda: load.first_ok_after(ev.target, t), left()))
    elif ev.kind == "hub":
        wall = time.time() - (time.monotonic() - t)
        tele = wait_for(lambda: col.telemetry_after(t, wall), left())
        ev.recovery["hub_telemetry"] = since(tele)
        ev.recovery["hub"] = since(wait_for(lambda: col.commits_grew_after(t, baseline), left()))
    else:
        st = wait_for(lambda: col.state_after(t), left())
        ev.recovery["replay_state"] = since(st[0] if st else None)
        ev.recovery["replay_verdict"] = since(wait_for(lambda: col.verdict_after(t), left()))
    missing = [k for k, v in ev.recovery.items() if v is None]
    if missing and not ev.error:
        ev.error = f"not recovered within {timeout_s:g} s: {', '.join(missing)}"


def _log_heads(fleet: ProcFleet) -> dict[str, int]:
    out = {}
    for n, a in fleet.agents.items():
        try:
            db = sqlite3.connect(f"file:{a.db}?mode=ro", uri=True)
            row = db.execute("SELECT max(seq) FROM records").fetchone()
            db.close()
            out[n] = -1 if row[0] is None else int(row[0])
        except sqlite3.Error:
            out[n] = -1
    return out


def _pending(store: Path) -> int:
    try:
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        n = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        db.close()
        return int(n)
    except sqlite3.Error:
        return -1


def _settle(fleet: ProcFleet, col: Collector, timeout_s: float) -> dict[str, Any]:
    """Wait until the daemon's chain head reached every log's head and nothing is pending."""
    t0 = time.monotonic()
    heads = _log_heads(fleet)

    def done() -> bool:
        seen = col.last_heads()
        return all(seen.get(n, -1) >= h for n, h in heads.items()) and _pending(fleet.store) == 0

    ok = wait_for(done, timeout_s, 0.5)
    seen = col.last_heads()
    behind = {n: (seen.get(n, -1), h) for n, h in heads.items() if seen.get(n, -1) < h}
    pending = _pending(fleet.store)
    state = "settled" if ok else f"NOT settled: daemon behind {behind}, pending {pending}"
    return {
        "seconds": time.monotonic() - t0,
        "settled": bool(ok),
        "state": state,
        "log_heads": heads,
        "daemon_heads": seen,
    }


# --- invariants ---------------------------------------------------------------------------
def _read_log(db: Path) -> list[tuple[int, str, bytes, bytes]]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT seq, request_id, digest, chain FROM records ORDER BY seq")
        return [(int(s), str(r), bytes(d), bytes(c)) for s, r, d, c in rows]
    finally:
        conn.close()


def _nearest_kill(
    events: list[KillEvent], node: str, t_wall: float, wall0: float, mono0: float
) -> tuple[str, str]:
    """The last kill before wall-clock time `t_wall`: (its class, 'after kill #n (x) +s')."""
    t = t_wall - wall0 + mono0
    before = [e for e in events if e.t_kill <= t]
    if not before:
        return "no kill yet", "before any kill"
    e = before[-1]
    cls = e.kind if e.kind != "agent" else ("this agent" if e.target == node else "other agent")
    return cls, f"after kill #{e.n} ({e.target}) +{t - e.t_kill:.1f} s"


def _check(
    p: DrillParams,
    workdir: Path,
    fleet: ProcFleet,
    load: LoadGen,
    col: Collector,
    events: list[KillEvent],
    crashes: list[str],
    settle: dict[str, Any],
) -> DrillResult:
    v: dict[str, list[str]] = {k: [] for k in INVARIANTS}
    wall0, mono0 = time.time(), time.monotonic()
    # lost: acknowledged -> in the log; logs gapless with a chain that recomputes
    chains: dict[str, dict[int, bytes]] = {}
    logs: dict[str, dict[str, Any]] = {}
    for n, a in fleet.agents.items():
        rows = _read_log(a.db)
        by_seq = {s: (rid, c) for s, rid, _, c in rows}
        chains[n] = {s: c for s, (_, c) in by_seq.items()}
        acked = load.acked[n]
        for seq, rid in sorted(acked.items()):
            got = by_seq.get(seq)
            if got is None:
                v["lost"].append(f"{n} seq {seq} (request {rid}) acknowledged, not in the log")
            elif got[0] != rid:
                v["lost"].append(f"{n} seq {seq} acknowledged for {rid}, log holds {got[0]}")
        prev, gaps, broken = GENESIS, [], []
        for i, (seq, _, digest, chain) in enumerate(rows):
            if seq != i:
                gaps.append(f"{n} log has seq {seq} at position {i} (gap before it)")
                break
            prev = next_chain(prev, digest)
            if prev != chain:
                broken.append(f"{n} log chain does not recompute at seq {seq}")
                break
        v["lost"] += gaps + broken
        logs[n] = {
            "records": len(rows),
            "head": rows[-1][0] if rows else -1,
            "acked": len(acked),
            "gapless": not gaps,
            "chain_ok": not broken,
            "starts": a.starts,
        }
    v["lost"] += load.conflicts
    # forks: everything anyone saw or stored for (node, seq) agrees with the node's log
    for (n, seq), seen in sorted(col.commits.items()):
        mine = chains.get(n, {}).get(seq)
        if len(seen) > 1:
            v["forks"].append(f"{n} seq {seq}: {len(seen)} different chains published")
        elif mine is None:
            v["forks"].append(f"{n} seq {seq}: published, but not in the agent's log")
        elif mine not in seen:
            v["forks"].append(f"{n} seq {seq}: published chain differs from the agent's log")
    db = sqlite3.connect(f"file:{fleet.store}?mode=ro", uri=True)
    try:
        for n, seq, chain in db.execute("SELECT node, seq, chain FROM chains"):
            mine = chains.get(n, {}).get(seq)
            if mine is not None and mine != bytes(chain):
                v["forks"].append(f"{n} seq {seq}: daemon's chain state differs from the log")
        dec = msgspec.msgpack.Decoder(Commit)
        for n, seq, blob in db.execute("SELECT node, seq, commit_msg FROM pending"):
            c = dec.decode(blob)
            mine = chains.get(n, {}).get(seq)
            if mine is not None and mine != c.chain:
                v["forks"].append(f"{n} seq {seq}: daemon's pending commit differs from the log")
        # duplicate verdicts
        for n, seq, k in db.execute(
            "SELECT node, seq, count(*) FROM verdicts GROUP BY node, seq HAVING count(*) > 1"
        ):
            v["duplicate_verdicts"].append(f"{n} seq {seq}: {k} verdicts stored")
        vdec = msgspec.msgpack.Decoder(Verdict)
        verdicts = [vdec.decode(b) for (b,) in db.execute("SELECT body FROM verdicts ORDER BY sid")]
        adec = msgspec.msgpack.Decoder(Alert)
        alerts = [adec.decode(b) for (b,) in db.execute("SELECT body FROM alerts ORDER BY sid")]
    finally:
        db.close()
    for (n, seq), statuses in sorted(col.verdicts.items()):
        if len(set(statuses)) > 1:
            v["duplicate_verdicts"].append(f"{n} seq {seq}: published as {'/'.join(statuses)}")
    republished = sum(len(s) - 1 for s in col.verdicts.values() if len(set(s)) == 1)
    # chain_break: none at all on honest nodes
    breaks: list[dict[str, Any]] = []
    for x in verdicts:
        if x.status == "chain_break":
            cls, when = _nearest_kill(events, x.node, x.t, wall0, mono0)
            kind = x.evidence.chain_break or x.reason.split(":", 1)[0]
            breaks.append(
                {
                    "source": "verdict",
                    "node": x.node,
                    "seq": x.seq,
                    "kind": kind,
                    "after": cls,
                    "text": f"verdict {x.node} seq {x.seq}: {x.reason} ({when})",
                }
            )
            if kind == "fork":
                v["forks"].append(f"{x.node} seq {x.seq}: daemon found a fork: {x.reason}")
    judged = {(x.node, x.seq) for x in verdicts if x.status == "chain_break"}
    for al in alerts:
        if al.kind == "chain_break" and (al.node, al.seq) not in judged:
            cls, when = _nearest_kill(events, al.node, al.t, wall0, mono0)
            breaks.append(
                {
                    "source": "alert",
                    "node": al.node,
                    "seq": al.seq,
                    "kind": "alert:" + al.id.split(":", 1)[0],
                    "after": cls,
                    "text": f"alert {al.id}: {al.message} ({when})",
                }
            )
    v["chain_break"] += [b["text"] for b in breaks]
    # other findings against honest nodes: reported, not an invariant of this drill
    warnings = [
        f"verdict {x.node} seq {x.seq}: {x.status}: {x.reason}"
        for x in verdicts
        if x.status not in ("match", "within_noise", "chain_break")
    ]
    warnings += [
        f"alert {a.id}: {a.message}" for a in alerts if a.kind not in ("chain_break", *STATUSES)
    ]
    # crashes and recoveries
    v["crashes"] += crashes
    v["crashes"] += [f"kill #{e.n} ({e.target}): {e.error}" for e in events if e.error]
    if not settle["settled"]:
        v["crashes"].append(f"fleet did not settle within {p.settle_s:g} s: {settle['state']}")
    return DrillResult(
        params=p,
        workdir=workdir,
        events=events,
        duration_s=0.0,
        load={
            "sent": load.sent,
            "acked": sum(len(a) for a in load.acked.values()),
            "unanswered": load.unanswered,
            "rejected": dict(load.rejected),
        },
        logs=logs,
        verdicts=Counter(x.status for x in verdicts),
        alerts=Counter(a.kind for a in alerts),
        stream={
            "commits": len(col.commits),
            "verdicts": sum(len(s) for s in col.verdicts.values()),
            "republished_same_status": republished,
            "alerts": len(col.alerts),
            "undecodable": col.rejects,
        },
        violations=v,
        settle=settle,
        breaks=breaks,
        warnings=warnings,
    )


def print_report(r: DrillResult, out: Any = None) -> None:
    from fpmon.testing.drills.report import lines, pct, secs, table

    p = r.params
    by_kind = Counter(e.kind for e in r.events)
    table(
        f"kill drill: {len(r.events)} kills (hub {by_kind['hub']}, agent {by_kind['agent']}, "
        f"replay {by_kind['replay']}), {p.agents} agents, seed {p.seed}, "
        f"{r.duration_s:.0f} s",
        ["invariant", "result", "count"],
        [(k, "ok" if not r.violations[k] else "FAIL", len(r.violations[k])) for k in INVARIANTS],
        out,
    )
    rec = r.recovery()
    names = {
        "agent": "agent: restart -> first ok reply",
        "hub": "hub: restart -> daemon verifies a commit",
        "hub_telemetry": "hub: restart -> daemon gets telemetry",
        "replay_state": "replay: restart -> state answers",
        "replay_verdict": "replay: restart -> first verdict",
    }
    table(
        "recovery times",
        ["component", "kills", "p50", "max"],
        [
            (
                names[k],
                len(rec.get(k, [])),
                secs(pct(rec.get(k, []), 0.5)),
                secs(max(rec.get(k, []), default=None)),
            )
            for k in names
        ],
        out,
    )
    table(
        "agents' logs",
        ["agent", "records", "head", "acknowledged", "gapless", "chain", "starts"],
        [
            (n, x["records"], x["head"], x["acked"], x["gapless"], x["chain_ok"], x["starts"])
            for n, x in r.logs.items()
        ],
        out,
    )
    ld = r.load
    table(
        "load and verdicts",
        ["what", "figures"],
        [
            (
                "requests sent / acknowledged / unanswered",
                f"{ld['sent']} / {ld['acked']} / {ld['unanswered']}",
            ),
            ("replies not ok", ", ".join(f"{k} x{v}" for k, v in ld["rejected"].items()) or "0"),
            ("verdicts stored", ", ".join(f"{k} {v}" for k, v in sorted(r.verdicts.items()))),
            ("alerts stored", ", ".join(f"{k} {v}" for k, v in sorted(r.alerts.items())) or "0"),
            ("seen on the hub", ", ".join(f"{k} {v}" for k, v in r.stream.items())),
            ("settle", f"{r.settle['state']} in {r.settle['seconds']:.1f} s"),
        ],
        out,
    )
    if r.warnings:
        lines(
            f"other findings on these honest nodes ({len(r.warnings)}, not failing):",
            r.warnings,
            out,
            limit=15,
        )
    for k in INVARIANTS:
        if r.violations[k]:
            lines(f"FAIL {k} ({len(r.violations[k])}):", r.violations[k], out)
    if r.breaks:
        kinds = Counter(b["kind"] for b in r.breaks)
        after = Counter(f"{b['kind']} after {b['after']}" for b in r.breaks)
        lines(
            "chain_break findings by kind, and by the last kill before each:",
            [
                ", ".join(f"{k} {n}" for k, n in kinds.most_common()),
                ", ".join(f"{k}: {n}" for k, n in after.most_common()),
            ],
            out,
        )
