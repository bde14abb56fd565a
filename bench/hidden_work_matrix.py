"""Hidden-work matrix (issue 13, item 7) in ONE self-time-boxed call: real agents, the real
replay daemon, one phase after another, results written after every phase.

The fleet of `bench/hidden_work_e2e.py`: agent `node` on `--node-device`, agent `control` on
`--control-device`, the replay daemon in this process with its reference on `--reference`, a
load thread per agent submitting batch-1 requests back to back. Then `--phases`, a comma list
of NAME:SECONDS run in order:

    quiet            the node serves honestly
    computeD         + bf16 8192^3 matmuls at duty D in another process on the node's GPU
    memoryD          + 1 GiB copies at duty D in another process on the node's GPU
    batchN           node restarted with [redteam] actual_batch = N (covert rows, declares 1)
    instreamD        node restarted with [redteam] side_work_duty = D (side work on a second
                     CUDA stream inside the engine process; skipped, with the agent config's
                     own words, where this build's config does not know the key)

A phase whose node config differs from the running one restarts the node agent (same name,
state folder, signing key and fixed endpoints: its record chain continues, the daemon
reconnects). Per phase: time to first alert per kind on the node (from the phase's start and
from its preparation: side process launch or restart), alerts on the control (must be 0;
`foreign_process` naming this process, the verifier whose reference shares the control's GPU,
is counted apart), alerts in quiet phases (false alarms), every accounting window's
observed/explained per metric, the undeclared_capacity details, verdicts and tokens/s.

Self-time-boxed: `--deadline-s` after the bench's start (after its imports) it stops cleanly
(the running phase is cut short, later ones are marked skipped), writes what it has and exits
0. `--out`/matrix.json is rewritten after every phase and every `--flush-s` inside one, so a
killed run still leaves data.

    bash bench/gpu_matrix.sh                   # the device call: carried wheels, then this
    PYTHONPATH=. python bench/hidden_work_matrix.py --out /tmp/matrix          # two GPUs
    PYTHONPATH=. python bench/hidden_work_matrix.py --dry-run --out /tmp/mx \\
        --phases quiet:10,compute0.1:6,batch4:12,instream0.5:8 --window-s 4 --tokens 8
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import fpmon.replay.accounting as accounting_mod
from fpmon import tomlw
from fpmon.agents.client import submit
from fpmon.agents.config import load_config
from fpmon.errors import FpmonError
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.sidework import SideProcess
from fpmon.testing.drills.procs import free_ports, tcp
from fpmon.testing.spawn import AgentProcess

DEFAULT_PHASES = (
    "quiet:120,compute0.1:30,compute0.5:30,compute1.0:30,memory1.0:30,quiet:20,"
    "batch4:30,instream0.5:30"
)
PHASE_RE = re.compile(r"^(quiet|compute|memory|batch|instream)([0-9.]*)$")
SIDE_WORK_KEY = "side_work_duty"  # the in-process side-work behaviour (branch demo13)
NODES = ("node", "control")
METRICS = accounting_mod.METRICS


@dataclass
class Phase:
    name: str  # as given, e.g. "compute0.5"
    kind: str  # quiet | compute | memory | batch | instream
    level: str  # duty or batch size as given ("" for quiet)
    planned_s: float
    status: str = "pending"  # pending | running | done | cut | skipped | failed
    note: str = ""
    t_prepare: float = 0.0  # preparation began (restart, side process launch)
    t_ready: float = 0.0  # the condition holds from here
    t_end: float = 0.0
    restart_s: float | None = None
    restart_from: float = 0.0  # the node was held, stopped and restarted between these
    restart_to: float = 0.0
    side_info: str = ""

    @property
    def redteam(self) -> dict[str, Any] | None:
        """The node's [redteam] table for this phase (None: an honest node)."""
        if self.kind == "batch":
            return {"enabled": True, "actual_batch": int(self.level)}
        if self.kind == "instream":
            return {"enabled": True, SIDE_WORK_KEY: float(self.level)}
        return None


def parse_phases(spec: str) -> list[Phase]:
    out = []
    for item in filter(None, (s.strip() for s in spec.split(","))):
        name, _, secs = item.partition(":")
        m = PHASE_RE.match(name)
        if not m or not secs:
            raise SystemExit(f"--phases: {item!r} is not NAME:SECONDS (quiet, computeD, ...)")
        kind, level = m[1], m[2]
        if (kind == "quiet") != (level == ""):
            raise SystemExit(f"--phases: {item!r}: quiet takes no level, the others need one")
        if kind == "batch" and not level.isdigit():
            raise SystemExit(f"--phases: {item!r}: batchN takes a whole number")
        if kind in ("compute", "memory", "instream") and not 0 < float(level) <= 1:
            raise SystemExit(f"--phases: {item!r}: duty must be in (0, 1]")
        out.append(Phase(name, kind, level, float(secs)))
    if not out:
        raise SystemExit("--phases: no phase given")
    return out


class NoSide:
    """Dry run: the side process is not started (no GPU); the phase still runs its time."""

    info = "dry run: no side work"

    def __enter__(self) -> NoSide:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class WindowLog:
    """Every accounting window's observed/explained per metric, alert or not: the honest spread
    (how far below the threshold quiet windows stay) is what a false-alarm run measures, and
    the alert carries only windows that went over. Reads the typed window the daemon keeps for
    its state replies (`Accounting.windows`) after each check."""

    def __init__(self, acc: Any) -> None:
        self.rows: list[dict[str, Any]] = []
        check = acc.check

        def wrapped_check(node: str, now: float, tokens_since: Any) -> Any:
            before = acc.windows.get(node)
            out = check(node, now, tokens_since)
            w = acc.windows.get(node)
            if w is not None and w is not before:
                self.rows.append(
                    {
                        "node": node,
                        "t_start": w.start_t,
                        "t_end": w.start_t + w.window_s,
                        "tokens": w.tokens,
                        "metrics": {
                            m.metric: {
                                "observed_s": m.observed_s,
                                "explained_s": m.explained_s,
                                "ratio": m.observed_s / m.explained_s if m.explained_s else None,
                                "over": m.over,
                            }
                            for m in w.metrics
                        },
                        "not_judged": sorted(w.not_judged),
                    }
                )
            return out

        acc.check = wrapped_check


class Load(threading.Thread):
    """Batch-1 requests back to back to one agent; pausable around a restart of that agent."""

    def __init__(self, name: str, agent: AgentProcess, tokens: int, stop: threading.Event):
        super().__init__(daemon=True, name=f"load-{name}")
        self.node, self.agent, self.tokens, self.stop = name, agent, tokens, stop
        self.pause = threading.Event()
        self.busy = threading.Lock()  # held while a request is in flight
        self.served: list[tuple[float, int, int]] = []  # (t reply, seq, generated tokens)
        self.errors = 0

    def hold(self) -> None:
        """Return once no request is in flight and none will start until `resume`."""
        self.pause.set()
        with self.busy:
            pass

    def resume(self) -> None:
        self.pause.clear()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            # Paused: wait with the lock free. Sleeping under it starved hold() (this thread
            # re-took the lock before the waiter woke): a restart waited 268 s on the H200.
            if self.pause.is_set():
                time.sleep(0.05)
                continue
            with self.busy:
                if self.pause.is_set():  # checked under the lock: hold() then means no request
                    continue
                try:
                    r = submit(
                        self.agent.endpoints["intake"],
                        f"request {i} of {self.node}: tell me",
                        self.tokens,
                        60,
                    )
                except FpmonError:
                    self.errors += 1
                    time.sleep(0.5)
                    continue
            i += 1
            if r.status == "ok":
                self.served.append((time.time(), r.seq, len(r.output_ids)))
            else:
                self.errors += 1


class Deadline(Exception):
    pass


def agent_doc(
    tmp: Path, name: str, args: argparse.Namespace, ports: list[int], redteam: dict[str, Any] | None
) -> dict[str, Any]:
    """A node's whole config: fixed endpoints and state folder, so a restart keeps both."""
    doc: dict[str, Any] = {
        "node": name,
        "state_dir": str(tmp / name / "state"),
        "endpoints": dict(zip(("intake", "publish", "openings"), map(tcp, ports), strict=True)),
        "engine": {"model": args.model, "dtype": "bfloat16", "device": args.device_of[name]},
        "batching": {"max_batch": 1, "max_wait_ms": 2},
        "security": {"curve": False},
        "publish": {"head_every_s": 0.5},
    }
    if args.dry_run:
        doc["engine"]["threads"] = 1  # as the daemon replays on the CPU; 2 shared cores here
    if redteam is not None:
        doc["redteam"] = redteam
    return doc


def write_agent_config(tmp: Path, name: str, label: str, doc: dict[str, Any]) -> Path:
    """Write and check it with the agent's own config layer (raises FpmonError if refused)."""
    path = tmp / name / f"{name}-{label}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    tomlw.write(path, doc)
    load_config(path)
    return path


class Matrix:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.time()
        self.deadline = self.t0 + args.deadline_s
        self.phases = parse_phases(args.phases)
        self.tmp = Path(tempfile.mkdtemp(prefix="fpmon-matrix-"))
        self.status = "starting"
        self.events: list[str] = []
        self.startup: dict[str, float] = {}
        self.restart_est: float = args.restart_estimate_s  # raised once starts are measured
        self.agents: dict[str, AgentProcess] = {}
        self.procs: list[AgentProcess] = []  # every agent process started, for teardown
        self.node_redteam: dict[str, Any] | str | None = None  # "down": stopped, not back
        self.ports = {n: free_ports(3) for n in NODES}
        self.loads: dict[str, Load] = {}
        self.daemon: ReplayDaemon | None = None
        self.daemon_thread = threading.Thread()
        self.windows: WindowLog | None = None
        self.stop_load = threading.Event()
        self.meter = ""
        self.out_of_time = False  # a phase was skipped or cut for lack of time

    # --- time --------------------------------------------------------------------------------
    def left(self) -> float:
        """Seconds left before teardown must begin."""
        return self.deadline - self.args.reserve_s - time.time()

    def sleep_until(self, t: float) -> None:
        """Sleep until `t` (or the deadline), flushing results now and then."""
        next_flush = time.time() + self.args.flush_s
        while True:
            now = time.time()
            end = min(t, self.deadline - self.args.reserve_s)
            if now >= end:
                if end < t:
                    raise Deadline
                return
            if now >= next_flush:
                self.write()
                next_flush = now + self.args.flush_s
            time.sleep(min(1.0, end - now))

    def say(self, msg: str) -> None:
        line = f"[t+{time.time() - self.t0:6.1f}s] {msg}"
        self.events.append(line)
        print(line, flush=True)

    # --- fleet -------------------------------------------------------------------------------
    def start_agent(self, name: str, label: str, redteam: dict[str, Any] | None) -> None:
        """Start `name` and wait until it serves. Raises Deadline when the deadline, not the
        agent, cut the wait short; FpmonError when the agent exited or never served."""
        doc = agent_doc(self.tmp, name, self.args, self.ports[name], redteam)
        path = write_agent_config(self.tmp, name, label, doc)
        a = AgentProcess(path, log_path=self.tmp / f"{name}.log")  # one log across restarts
        self.procs.append(a)  # stopped at the end even if interrupted while starting
        # Half the teardown reserve may go to a start: the other half stops the fleet.
        budget = self.deadline - self.args.reserve_s / 2 - time.time()
        if budget < 1:
            raise Deadline
        timeout = min(240.0, budget)
        t = time.time()
        try:
            a.start(timeout_s=timeout)
        except FpmonError:
            if timeout < 240 and time.time() - t >= timeout - 1:
                raise Deadline from None  # still loading when time ran out (it was killed)
            raise
        self.agents[name] = a
        if name in self.loads:
            self.loads[name].agent = a

    def start_fleet(self) -> None:
        errors: list[BaseException] = []

        def start(name: str) -> None:
            try:
                self.start_agent(name, "honest", None)
            except BaseException as e:
                errors.append(e)

        t = time.time()
        ts = [threading.Thread(target=start, args=(n,)) for n in NODES]
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        if errors:
            raise FpmonError(f"agents did not start: {errors}")
        self.startup["agents_start_s"] = round(time.time() - t, 1)
        self.say(f"agents up in {self.startup['agents_start_s']} s")
        # A restart is a drain, a stop and a start: on the H200 31-34 s against a 37-43 s first
        # start (48-51 s, once 306 s, while Load starved hold()), so the flag's estimate (30 s)
        # alone let restarts begin that the deadline then cut.
        self.restart_est = max(self.args.restart_estimate_s, self.startup["agents_start_s"] + 20)
        key = self.tmp / "sampling.key"
        key.write_text("22" * 32)
        key.chmod(0o600)
        nodes = [a.node_entry() for a in self.agents.values()]
        doc = {
            "replay": {
                "store": str(self.tmp / "replay.sqlite"),
                "publish": "tcp://127.0.0.1:0",
                "state": "tcp://127.0.0.1:0",
                "device": self.args.reference,
            },
            "models": {self.args.model: self.args.model},
            "sampling": {"key_file": str(key), "rate": self.args.rate},
            "attribution": {"enabled": self.args.attribution},
            "timing": {"capacity_window_s": self.args.window_s},
            "node": nodes,
        }
        self.daemon = ReplayDaemon(config.parse(self.tmp / "replay.toml", doc))
        self.windows = WindowLog(self.daemon.watch.accounting)
        self.daemon.start()
        self.daemon_thread = threading.Thread(target=self.daemon.run, daemon=True, name="daemon")
        self.daemon_thread.start()
        for name, a in self.agents.items():
            self.loads[name] = Load(name, a, self.args.tokens, self.stop_load)
            self.loads[name].start()
        # Warm-up: the daemon loads its reference and judges a few records of each node.
        t = time.time()
        warm_until = min(t + 240, self.deadline - self.args.reserve_s)
        while time.time() < warm_until:
            counts = self.daemon.store.verdict_counts()
            if all(sum(counts.get(n, {}).values()) >= 3 for n in NODES):
                break
            time.sleep(1)
        else:
            self.say("warm-up did not see 3 verdicts per node before its limit; going on")
        self.startup["warmup_s"] = round(time.time() - t, 1)
        self.meter = self.daemon.judge.meter.status if self.daemon.judge.meter else ""
        self.say(f"warm-up {self.startup['warmup_s']} s; reference meter: {self.meter}")

    def restart_node(self, p: Phase) -> bool:
        """Restart the node agent with `p`'s [redteam]; False (phase skipped) if refused."""
        want = p.redteam
        try:
            doc = agent_doc(self.tmp, "node", self.args, self.ports["node"], want)
            write_agent_config(self.tmp, "node", p.name, doc)
        except FpmonError as e:
            p.status, p.note = "skipped", f"the agent config refuses it: {e}"
            if p.kind == "instream":
                p.note += (
                    f" (`{SIDE_WORK_KEY}`, the in-process side-work behaviour, is on branch"
                    " demo13; not in this build)"
                )
            self.say(f"{p.name}: SKIPPED: {p.note}")
            return False
        need = self.restart_est + self.args.min_phase_s
        if self.left() < need:
            p.status, p.note = (
                "skipped",
                f"{self.left():.0f} s left, a restart and phase need {need:.0f}",
            )
            self.out_of_time = True
            self.say(f"{p.name}: SKIPPED: {p.note}")
            return False
        self.say(f"{p.name}: restarting node with [redteam] {want}")
        load = self.loads["node"]
        p.restart_from = time.time()
        load.hold()  # no request in flight: SIGTERM finds the agent idle
        if not self.drain_openings("node", 10.0):
            self.say(f"{p.name}: openings of node still pending after 10 s; restarting anyway")
        try:
            self.agents["node"].stop(timeout_s=20)
            self.node_redteam = "down"
            try:
                self.start_agent("node", p.name, want)
            except Deadline:
                p.status, p.note = "cut", "deadline while the node restarted"
                raise
            except FpmonError as e:
                p.status, p.note = "failed", f"node did not start with [redteam] {want}: {e}"
                self.say(f"{p.name}: FAILED: {p.note[:600]}")
                if self.left() < self.restart_est + self.args.min_phase_s:
                    self.say("node left down: no time to restart it honest")
                    return False
                self.say("restarting node honest")
                self.start_agent("node", "honest-again", None)
                self.node_redteam = None
                return False
        finally:
            p.restart_to = time.time()
            load.resume()
        self.node_redteam = want
        p.restart_s = round(p.restart_to - p.restart_from, 1)
        self.say(f"{p.name}: node serving again after {p.restart_s} s")
        self.restart_est = max(self.restart_est, p.restart_s)
        return True

    def drain_openings(self, node: str, limit_s: float) -> bool:
        """Wait until the daemon holds no sampled record of `node` still to be opened: an
        opening asked of a stopping agent comes back `unopened`, charged to the phase before."""
        assert self.daemon is not None
        time.sleep(1.0)  # the last commit reaches the daemon and is sampled or not
        end = time.time() + limit_s
        while time.time() < end:
            (n,) = self.daemon.store.db.execute(
                "SELECT count(*) FROM pending WHERE node = ? AND stage = 'open'", (node,)
            ).fetchone()
            if n == 0:
                return True
            time.sleep(0.2)
        return False

    # --- phases ------------------------------------------------------------------------------
    def run_phase(self, p: Phase) -> None:
        p.t_prepare = time.time()
        if p.redteam != self.node_redteam and not self.restart_node(p):
            if not p.restart_from:
                p.t_prepare = 0.0  # skipped before touching the node: owns no time
            return
        need = self.args.min_phase_s + (10 if p.kind in ("compute", "memory") else 0)
        if self.left() < need:  # 10 s: a side process takes ~5 s to launch, more to stop
            p.status, p.note = ("cut" if p.restart_from else "skipped"), f"{self.left():.0f} s left"
            self.out_of_time = True
            self.say(f"{p.name}: {p.status.upper()}: {p.note}")
            if not p.restart_from:
                p.t_prepare = 0.0
            return
        side: Any = NoSide()
        if p.kind in ("compute", "memory") and not self.args.dry_run:
            side = SideProcess(p.kind, p.level, self.args.node_device)
        with side:
            p.t_ready = time.time()
            p.side_info = side.info if p.kind in ("compute", "memory") else ""
            p.status = "running"
            self.say(f"{p.name}: running {p.planned_s:g} s {p.side_info}")
            try:
                self.sleep_until(p.t_ready + p.planned_s)
                p.status = "done"
            except Deadline:
                p.status, p.note = "cut", "deadline"
                raise
            finally:
                p.t_end = time.time()
        self.write()

    def run(self) -> None:
        try:
            self.start_fleet()
            self.status = "running"
            self.write()
            for p in self.phases:
                if p.status == "pending":
                    self.run_phase(p)
            self.status = "deadline" if self.out_of_time else "done"
        except Deadline:
            self.status = "deadline"
            self.say(f"deadline ({self.args.deadline_s:g} s): stopping")
        finally:
            for p in self.phases:
                if p.status == "pending":
                    p.status, p.note = "skipped", "not reached (deadline or stop)"
                elif p.status == "running":  # interrupted (SIGTERM) inside the phase
                    p.status, p.note = "cut", "interrupted"

    def finish(self) -> None:
        """Stop the load, let the daemon take one more tick, write everything, stop the fleet."""
        self.stop_load.set()
        if self.daemon is not None:
            time.sleep(1.5)  # one more daemon tick: the last window and alerts
        try:
            self.write()
        finally:
            if self.daemon is not None:
                self.daemon.stop()
                self.daemon_thread.join(timeout=10)
        for a in self.procs:
            a.stop(timeout_s=8)  # returns at once for one already stopped
        tails = []
        for name in NODES:
            log = self.tmp / f"{name}.log"
            if log.exists():
                tails.append(f"==== {name} agent log (tail) ====\n{log.read_text()[-20000:]}")
        (self.args.out / "agents-tail.log").write_text("\n".join(tails))

    # --- results -----------------------------------------------------------------------------
    def started(self) -> list[tuple[str, Phase]]:
        """Phases that began, keyed uniquely (a name may repeat: quiet twice)."""
        return [(f"{p.name}#{i}", p) for i, p in enumerate(q for q in self.phases if q.t_prepare)]

    def segments(self) -> list[tuple[str, float, float]]:
        """Who owns which time: a phase from its preparation to the next one's."""
        started = self.started()
        out = [("warm-up", 0.0, started[0][1].t_prepare if started else float("inf"))]
        for i, (key, p) in enumerate(started):
            nxt = started[i + 1][1].t_prepare if i + 1 < len(started) else float("inf")
            out.append((key, p.t_prepare, nxt))
        return out

    def write(self) -> None:
        try:
            doc = self.report()
        except Exception as e:  # a report bug must not lose the run: write what is safe
            doc = {"status": self.status, "report_error": repr(e), "events": self.events}
        path = self.args.out / "matrix.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1, default=str))
        os.replace(tmp, path)

    def report(self) -> dict[str, Any]:
        d = self.daemon
        alerts = [a.to_map() for a in d.store.alerts(since_sid=0, limit=100_000)] if d else []
        verdicts: list[tuple[str, int, str]] = []
        if d is not None:
            for n in NODES:
                verdicts += [(n, v.seq, v.status) for v in d.store.verdicts(node=n, limit=100_000)]
        segs = self.segments()
        started = dict(self.started())

        def owner(a: float, b: float | None = None) -> str:
            """The segment holding time `a`, or overlapping [a, b] the most."""
            if b is None:
                return next((s for s, x, y in segs if x <= a < y), "warm-up")
            return max(segs, key=lambda s: min(b, s[2]) - max(a, s[1]))[0]

        def carried(key: str, evidence_start: float) -> bool:
            """Evidence that began in the segment before (the last phase's side work in a
            window that ended in this one): counted apart, neither a first alert nor a false
            alarm."""
            p = started.get(key)
            return p is not None and evidence_start < p.t_prepare - 0.5

        def preparing(key: str, t: float) -> bool:
            """Raised while this phase was being set up (node restart, side process launch)."""
            p = started.get(key)
            return p is not None and t < (p.t_ready or float("inf"))

        restarts = [(p.restart_from, p.restart_to or time.time()) for p in self.phases]

        def during_restart(t: float) -> bool:
            """Raised while the node was down for a restart (deaf, an opening it missed),
            whichever phase served the record: an artifact of the bench, not of hidden work."""
            return any(a <= t <= b for a, b in restarts if a)

        served = {n: list(self.loads[n].served) if n in self.loads else [] for n in NODES}
        seq_owner = {n: {seq: owner(t) for t, seq, _ in served[n]} for n in NODES}
        vpid = os.getpid()
        rows = []
        for a in alerts:
            det = a.get("details") or {}
            start = a["t"]
            if a["kind"] == "undeclared_capacity" and "window_s" in det:
                start = a["t"] - float(det["window_s"])
                seg = owner(start, a["t"])
            elif a.get("seq", -1) >= 0 and a["seq"] in seq_owner.get(a["node"], {}):
                seg = seq_owner[a["node"]][a["seq"]]  # a verdict's alert: when it was served
            else:
                seg = owner(a["t"])
            rows.append(
                {
                    "segment": seg,
                    "node": a["node"],
                    "kind": a["kind"],
                    "t_rel": round(a["t"] - self.t0, 1),
                    "t": a["t"],
                    "seq": a.get("seq", -1),
                    "carried_over": carried(seg, start),
                    "in_preparation": preparing(seg, a["t"]),
                    "during_restart": during_restart(a["t"]),
                    "verifier_itself": a["kind"] == "foreign_process" and det.get("pid") == vpid,
                    "message": a["message"],
                    "details": det,
                }
            )
        windows = [
            {**w, "segment": (seg := owner(w["t_start"], w["t_end"])),
             "carried_over": carried(seg, w["t_start"])}
            for w in (list(self.windows.rows) if self.windows else [])
        ]  # fmt: skip
        phases_out = []
        keys = {id(p): k for k, p in started.items()}
        for p in self.phases:
            phases_out.append(
                self.phase_result(p, keys.get(id(p)), rows, windows, verdicts, seq_owner, served)
            )
        quiet = {k for k, p in started.items() if p.kind == "quiet"}
        false_alarms = [
            r
            for r in rows
            if r["segment"] in quiet
            and r["node"] == "node"
            and not (r["carried_over"] or r["verifier_itself"] or r["during_restart"])
        ]
        control_alerts = [r for r in rows if r["node"] == "control" and not r["verifier_itself"]]
        honest = [
            w
            for w in windows
            if w["node"] == "control" or (w["segment"] in quiet and not w["carried_over"])
        ]
        ran = [p for p in self.phases if p.t_end]
        return {
            "status": self.status,
            "args": {k: str(v) for k, v in vars(self.args).items()},
            "started": self.t0,
            "elapsed_s": round(time.time() - self.t0, 1),
            "verifier_pid": vpid,
            "reference_meter": self.meter,
            "startup": self.startup,
            "events": self.events,
            "phases": phases_out,
            "summary": {
                "node_alerts_in_quiet": len(false_alarms),
                "control_alerts": len(control_alerts),
                "control_alerts_verifier_itself": sum(
                    r["verifier_itself"] for r in rows if r["node"] == "control"
                ),
                "quiet_node_s": round(
                    sum(p.t_end - p.t_ready for p in ran if p.kind == "quiet"), 1
                ),
                "control_serving_s": round(sum(p.t_end - p.t_ready for p in ran), 1),
                "honest_windows": len(honest),
                "honest_ratio_range": ratio_range(honest),
                "load_errors": {n: self.loads[n].errors for n in self.loads},
                "verdicts": d.store.verdict_counts() if d else {},
            },
            "alerts": rows,
            "windows": windows,
        }

    def phase_result(
        self,
        p: Phase,
        key: str | None,
        rows: list[dict[str, Any]],
        windows: list[dict[str, Any]],
        verdicts: list[tuple[str, int, str]],
        seq_owner: dict[str, dict[int, str]],
        served: dict[str, list[tuple[float, int, int]]],
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "phase": p.name,
            "kind": p.kind,
            "level": p.level,
            "planned_s": p.planned_s,
            "status": p.status,
            "note": p.note,
            "restart_s": p.restart_s,
            "side_info": p.side_info,
        }
        if key is None or not p.t_ready:
            return out
        end = p.t_end or time.time()
        out["ran_s"] = round(end - p.t_ready, 1)
        out["prepare_s"] = round(p.t_ready - p.t_prepare, 1)
        for n in NODES:
            toks = sum(k for t, _, k in served[n] if p.t_ready <= t < end)
            out[f"{n}_tok_s"] = round(toks / max(end - p.t_ready, 1e-9), 1)
        mine = [r for r in rows if r["segment"] == key]
        first: dict[str, dict[str, float]] = {}
        for r in mine:
            fresh = not (r["carried_over"] or r["during_restart"])  # the phase's own evidence
            if r["node"] == "node" and fresh and r["kind"] not in first:
                first[r["kind"]] = {
                    "after_ready_s": round(r["t"] - p.t_ready, 1),
                    "after_prepare_s": round(r["t"] - p.t_prepare, 1),
                }
        out["first_alert"] = first
        counts: dict[str, dict[str, int]] = {n: {} for n in NODES}
        for r in mine:
            k = r["kind"]
            k += " (verifier itself)" if r["verifier_itself"] else ""
            k += " (window began in the last phase)" if r["carried_over"] else ""
            k += " (during restart/launch)" if r["in_preparation"] or r["during_restart"] else ""
            counts[r["node"]][k] = counts[r["node"]].get(k, 0) + 1
        out["alerts"] = counts
        out["control_alerts"] = sum(
            1 for r in mine if r["node"] == "control" and not r["verifier_itself"]
        )
        out["undeclared_capacity"] = [
            {
                "node": r["node"],
                "t_rel": r["t_rel"],
                "carried_over": r["carried_over"],
                "window_s": r["details"].get("window_s"),
                "tokens": r["details"].get("tokens"),
                "over": r["details"].get("over"),
                "metrics": {
                    m: {k: v.get(k) for k in ("observed_s", "explained_s", "ratio")}
                    for m, v in (r["details"].get("metrics") or {}).items()
                },
            }
            for r in mine
            if r["kind"] == "undeclared_capacity"
        ]
        # Windows of this phase with no evidence from before it: the figures it stands for.
        inside = {
            n: [
                w
                for w in windows
                if w["node"] == n and w["segment"] == key and not w["carried_over"]
            ]
            for n in NODES
        }
        out["windows_inside"] = {n: len(ws) for n, ws in inside.items()}
        out["ratio_range"] = {n: ratio_range(ws) for n, ws in inside.items()}
        vs: dict[str, dict[str, int]] = {n: {} for n in NODES}
        for n, seq, status in verdicts:
            if seq_owner[n].get(seq) == key:
                vs[n][status] = vs[n].get(status, 0) + 1
        out["verdicts"] = vs
        return out


def ratio_range(ws: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per metric, [min, max] of observed/explained over the windows (None ratios left out)."""
    out: dict[str, list[float]] = {}
    for m in METRICS:
        rs = [w["metrics"][m]["ratio"] for w in ws if w["metrics"].get(m, {}).get("ratio")]
        if rs:
            out[m] = [min(rs), max(rs)]
    return out


def table(doc: dict[str, Any]) -> str:
    def rr(r: dict[str, list[float]], m: str) -> str:
        return f"{r[m][1]:.2f}" if m in r else "-"

    head = (
        f"{'phase':<13} {'status':<8} {'ran s':>6} {'prep s':>6} {'node t/s':>8} "
        f"{'ctl t/s':>7}  {'max ratio node sm/tensor/dram/util':<34} {'ctl alerts':>10}  "
        "first alert on node (s after start / after prep)  | node alerts | node verdicts"
    )
    lines = [head, "-" * len(head)]
    for p in doc["phases"]:
        if "ran_s" not in p:
            lines.append(f"{p['phase']:<13} {p['status']:<8} {p['note'][:150]}")
            continue
        r = p["ratio_range"]["node"]
        ratios = "/".join(rr(r, m) for m in ("sm_util", "tensor_util", "dram_bw_util", "util"))
        first = ", ".join(
            f"{k} {v['after_ready_s']:+.1f}/{v['after_prepare_s']:.1f}"
            for k, v in p["first_alert"].items()
        )
        node_alerts = ", ".join(f"{k} x{v}" for k, v in p["alerts"]["node"].items())
        verd = ", ".join(f"{k} {v}" for k, v in p["verdicts"]["node"].items())
        lines.append(
            f"{p['phase']:<13} {p['status']:<8} {p['ran_s']:>6} {p['prepare_s']:>6} "
            f"{p['node_tok_s']:>8} {p['control_tok_s']:>7}  {ratios:<34} "
            f"{p['control_alerts']:>10}  {first or 'none'} | {node_alerts or '-'} | {verd or '-'}"
        )
    s = doc["summary"]
    lines.append(
        f"false alarms: node alerts in quiet phases {s['node_alerts_in_quiet']} over "
        f"{s['quiet_node_s']} s of quiet node; control alerts: {s['control_alerts']} over "
        f"{s['control_serving_s']} s "
        f"(+{s['control_alerts_verifier_itself']} foreign_process naming the verifier itself, "
        "whose reference shares the control's GPU)"
    )
    lines.append(
        f"honest windows (control all run, node in quiet): {s['honest_windows']}, "
        f"observed/explained ranges {s['honest_ratio_range']}"
    )
    lines.append(f"verdicts {s['verdicts']}; load errors {s['load_errors']}")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--phases", default=DEFAULT_PHASES)
    ap.add_argument("--model", default="random:qwen2.5-1.5b")
    ap.add_argument("--node-device", default="cuda:0")
    ap.add_argument("--control-device", default="cuda:1")
    ap.add_argument("--reference", default="cuda:1")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--rate", type=float, default=0.2, help="sampling rate")
    ap.add_argument("--window-s", type=float, default=10.0, help="capacity_window_s")
    ap.add_argument("--attribution", action="store_true", help="attribute mismatches")
    ap.add_argument("--deadline-s", type=float, default=520.0, help="stop cleanly after this")
    ap.add_argument("--reserve-s", type=float, default=15.0, help="kept for teardown")
    ap.add_argument("--restart-estimate-s", type=float, default=30.0)
    ap.add_argument("--min-phase-s", type=float, default=10.0)
    ap.add_argument("--flush-s", type=float, default=20.0, help="rewrite matrix.json this often")
    ap.add_argument("--out", type=Path, default=Path("hidden-matrix"))
    ap.add_argument("--dry-run", action="store_true", help="CPU wiring check: tiny, no side work")
    args = ap.parse_args()
    if args.dry_run:
        args.model, args.node_device, args.control_device, args.reference = ("tiny",) + ("cpu",) * 3
    args.device_of = {"node": args.node_device, "control": args.control_device}
    args.out.mkdir(parents=True, exist_ok=True)
    parse_phases(args.phases)  # refuse a bad list before loading anything

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # an outer `timeout` still gets the JSON written and agents down

    signal.signal(signal.SIGTERM, on_term)
    m = Matrix(args)
    rc = 0
    try:
        m.run()
    except KeyboardInterrupt:
        m.status = "interrupted"
        m.say("interrupted: writing what there is")
    except Exception as e:
        m.status = f"error: {e!r}"[:600]
        m.say(m.status)
        rc = 0 if m.daemon is not None else 1  # data from a started fleet is still data
    finally:
        m.finish()
    doc = json.loads((args.out / "matrix.json").read_text())
    if "phases" in doc:
        print(table(doc))
    print(f"status {m.status}; {args.out / 'matrix.json'}; {time.time() - m.t0:.0f} s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
