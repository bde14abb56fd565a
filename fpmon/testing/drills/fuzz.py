"""The socket fuzz: mutated and hostile frames at every socket a stranger can reach.

A hub, one agent (tiny model, small limits so fuzzed submits that happen to be valid stay
cheap) and the replay daemon subscribed through the hub run as real processes
(`procs.ProcFleet`). Each target gets its share of frames from a seeded `frames.Mutator`
(mutations of valid frames of every message type, hand-crafted hostile values, 5 MiB frames),
from connections that are replaced every `churn` frames (new peers, new ROUTER identities):

  hub-xsub        PUB -> the hub's XSUB, as a publisher (a SUB on "" makes the hub want all)
  hub-xpub        XSUB -> the hub's XPUB, as a subscriber: (un)subscription frames and others
  daemon-sub      PUB -> the hub's XSUB, commit/head/telemetry shapes the daemon subscribes to
  daemon-state    DEALER -> the daemon's state ROUTER
  agent-intake    DEALER -> the agent's intake ROUTER
  agent-openings  DEALER -> the agent's openings ROUTER
  raw-tcp         plain TCP to every ZeroMQ endpoint: random bytes, cut ZMTP greetings

After each target, and at the end: every process is alive and answers a valid request
(agent: a real submit gets `ok`; daemon: StateRequest -> StateReply and it verifies the
agent's new commit; hub: a valid commit flows from a fresh publisher to a fresh subscriber).
Reported: frames/s per target, RSS per process before/after, reject counters (agent status
file, daemon Prometheus metrics), tracebacks in the logs.
"""

from __future__ import annotations

import contextlib
import faulthandler
import json
import multiprocessing as mp
import os
import random
import select
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from fpmon.agents.client import submit
from fpmon.errors import FpmonError
from fpmon.setups import Setup
from fpmon.testing.drills.frames import Mutator, valid_corpus
from fpmon.testing.drills.procs import (
    ProcFleet,
    StateClient,
    labelled,
    metrics,
    rss_bytes,
    wait_for,
)
from fpmon.wire import Commit, WireError, decode, encode

TARGETS = (
    "hub-xsub",
    "hub-xpub",
    "daemon-sub",
    "daemon-state",
    "agent-intake",
    "agent-openings",
    "raw-tcp",
)
AGENT = "drill-0"


@dataclass
class FuzzParams:
    frames: int = 1_000_000  # in all, split evenly across the framed targets (not raw-tcp)
    per_socket: int = 0  # when set: this many frames at each target instead
    targets: tuple[str, ...] = TARGETS
    seed: int = 1
    churn: int = 5000  # frames per connection before a new one
    huge_every: int = 20_000  # one 5 MiB frame every this many frames
    send_timeout_s: float = 5.0
    stuck_s: float = 60.0  # no frame accepted for this long: the target stopped taking any
    answer_timeout_s: float = 30.0
    workdir: Path | None = None

    def count(self, target: str) -> int:
        framed = [t for t in self.targets if t != "raw-tcp"] or ["raw-tcp"]
        n = self.per_socket or max(1, -(-self.frames // len(framed)))
        return min(n, 20_000) if target == "raw-tcp" else n


@dataclass
class TargetResult:
    name: str
    endpoint: str
    sent: int = 0
    seconds: float = 0.0
    received: int = 0  # replies or forwarded frames that came back to the fuzzer
    replies_read: bool = True  # False: a DEALER's replies were left unread (see _drain)
    reconnects: int = 0
    send_timeouts: int = 0
    stuck: str = ""
    ops: dict[str, int] = field(default_factory=dict)
    counted: dict[str, float] = field(default_factory=dict)  # counters advanced meanwhile
    checks: dict[str, str] = field(default_factory=dict)  # check -> "ok" or why not
    restarted: list[str] = field(default_factory=list)  # healed after this target
    fuzzer_aborts: list[str] = field(default_factory=list)  # libzmq aborts in the *fuzzer*

    def merge(self, o: TargetResult) -> None:
        """Add a later attempt's figures (a fuzzer child that aborted is replaced)."""
        self.endpoint = self.endpoint or o.endpoint
        self.sent += o.sent
        self.seconds += o.seconds
        self.received += o.received
        self.reconnects += o.reconnects
        self.send_timeouts += o.send_timeouts
        self.stuck = o.stuck
        self.replies_read = o.replies_read
        for k, v in o.ops.items():
            self.ops[k] = self.ops.get(k, 0) + v

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0


@dataclass
class FuzzResult:
    params: FuzzParams
    targets: list[TargetResult]
    rss: dict[str, list[tuple[str, int, int]]]  # process -> [(when, bytes, pid)]
    counters: dict[str, float]  # "agent intake:<reason>", "daemon:<reason>", ...: the whole run
    daemon_state_rejects: dict[str, dict[str, int]]
    tracebacks: dict[str, int]
    failures: list[str]
    duration_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.failures


# --- sockets --------------------------------------------------------------------------------
def _drain(sock: Any, limit: int = 10_000) -> int:
    if isinstance(sock, RawZmtp):
        return sock.drain()
    if sock.type in (zmq.PUB, zmq.DEALER):
        # A DEALER's replies are left unread (the target's ROUTER drops them at our HWM, as it
        # must for any slow peer): libzmq 4.3.5 can abort the *reader* with `!_more
        # (src/fq.cpp:80)` when an IMMEDIATE socket's connection is cut mid-reply (libzmq
        # #2163, #3663), and it did, in CI, in the fuzzer, never in a target.
        return 0
    n = 0
    while n < limit:
        try:
            sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            break
        n += 1
    return n


class _Sink:
    """A SUB on "" at the hub's XPUB, in a child process: counts what the hub forwards, and
    makes the hub (and so every publisher connected to it) send everything, whatever its
    topic. A child, like the fuzzing clients (`isolated`), because libzmq 4.3.5 can abort a
    peer that churns this hard; a dead sink is started again and its count kept."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self._mp = mp.get_context("fork")
        self._count = self._mp.RawValue("q", 0)
        self._stop = self._mp.Event()
        self._proc: Any = None
        self.restarts = 0

    @property
    def count(self) -> int:
        return int(self._count.value)

    def start(self) -> None:
        ready = self._mp.Event()
        self._proc = self._mp.Process(
            target=_sink_main, args=(self.endpoint, self._count, self._stop, ready), daemon=True
        )
        self._proc.start()
        ready.wait(5)

    def ensure(self) -> None:
        if self._proc is not None and not self._proc.is_alive():
            self.restarts += 1
            self.start()

    def stop(self) -> None:
        self._stop.set()
        if self._proc is not None:
            self._proc.join(5)
            if self._proc.is_alive():
                self._proc.kill()


def _sink_main(endpoint: str, count: Any, stop: Any, ready: Any) -> None:
    ctx = zmq.Context()
    sub = ctx.socket(zmq.SUB)
    sub.linger = 0
    sub.rcvhwm = 100_000
    sub.subscribe(b"")
    sub.connect(endpoint)
    ready.set()
    try:
        while not stop.is_set():
            if sub.poll(50):
                count.value += _drain(sub)
    finally:
        sub.close(0)
        ctx.term()


# --- fuzzing clients in child processes --------------------------------------------------------
FUZZER_ATTEMPTS = 200  # at 10^6 frames the daemon-sub client aborted every ~15 s


def isolated(
    name: str,
    n: int,
    job: Callable[[int, int, Any], TargetResult],
    errdir: Path,
    say: Callable[[str], None] = lambda s: None,
) -> TargetResult:
    """Send `n` frames with `job(count, attempt, progress)` in forked children, so that the
    fuzzer's own libzmq can abort without ending the run: at 10^6 frames and a reconnect every
    few thousand, libzmq 4.3.5 aborted the *fuzzing client* twice (`!_more` in fq.cpp,
    EAGAIN in session_base.cpp: libzmq #2163, #3663), never a target. An aborted child is
    counted with libzmq's message and replaced for the frames it did not send."""
    ctx = mp.get_context("fork")
    errdir.mkdir(parents=True, exist_ok=True)
    total = TargetResult(name, "")
    for attempt in range(FUZZER_ATTEMPTS):
        if total.sent >= n:
            break
        progress = ctx.RawValue("q", 0)
        rx, tx = ctx.Pipe(duplex=False)
        err = errdir / f"{name}-{attempt}.stderr"
        proc = ctx.Process(
            target=_child, args=(tx, progress, str(err), job, n - total.sent, attempt), daemon=True
        )
        proc.start()
        tx.close()
        try:
            got: TargetResult | str | None = rx.recv()
        except EOFError:  # the child died before it could answer
            got = None
        proc.join()
        rx.close()
        if isinstance(got, str):
            raise RuntimeError(f"the fuzzing client for {name} failed: {got}")
        if got is not None:
            total.merge(got)
            if got.stuck:
                break
            continue
        total.sent += int(progress.value)
        why = _abort_reason(err) or f"exit {proc.exitcode}"
        total.fuzzer_aborts.append(f"{why} after {progress.value} frames")
        say(f"{name}: the fuzzer's own client aborted ({why}); a new one goes on")
    return total


def _child(tx: Any, progress: Any, errfile: str, job: Any, count: int, attempt: int) -> None:
    faulthandler.disable()  # pytest's handler would print the abort to the run's own stderr
    fd = os.open(errfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)  # libzmq writes its assertion to fd 2 before abort(): the report quotes it
    try:
        result: TargetResult | str = job(count, attempt, progress)
    except Exception as e:  # a bug in the fuzzer, not libzmq: end the run, do not retry it
        result = f"{type(e).__name__}: {e}"
    tx.send(result)
    tx.close()


def _abort_reason(err: Path) -> str:
    try:
        text = err.read_text(errors="replace")
    except OSError:
        return ""
    hits = [ln.strip() for ln in text.splitlines() if "(src/" in ln or "Assertion" in ln]
    return hits[0][:160] if hits else ""


def _alive_pid(pid: int) -> Callable[[], bool]:
    """Whether `pid` runs, from a forked child that cannot wait() for it (not its parent)."""
    import psutil

    def alive() -> bool:
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return alive


class RawZmtp:
    """A ZMTP 3.0 peer on a plain TCP socket (NULL mechanism): sends any frames and keeps no
    state about them. libzmq's own SUB/XSUB keep every subscription they send in a trie that is
    freed recursively, so a 5 MiB subscription would crash the fuzzer, not the target."""

    GREETING = (
        b"\xff"
        + b"\x00" * 8
        + b"\x7f"
        + b"\x03\x00"
        + b"NULL"
        + b"\x00" * 16
        + b"\x00"
        + (b"\x00" * 31)
    )

    def __init__(self, endpoint: str, socket_type: bytes = b"XSUB", timeout_s: float = 5.0):
        host, port = endpoint.rsplit("/", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout_s)
        self.sock.sendall(self.GREETING)
        got = b""
        while len(got) < 64:
            chunk = self.sock.recv(64 - len(got))
            if not chunk:
                raise ConnectionError("peer closed during the greeting")
            got += chunk
        name, value = b"Socket-Type", socket_type
        body = b"\x05READY" + bytes([len(name)]) + name + len(value).to_bytes(4, "big") + value
        self.sock.sendall(b"\x04" + bytes([len(body)]) + body)
        self.sock.setblocking(False)
        self.received = 0

    @staticmethod
    def encode(frames: list[bytes]) -> bytes:
        out = []
        for i, f in enumerate(frames):
            more = 1 if i < len(frames) - 1 else 0
            if len(f) < 256:
                out.append(bytes([more, len(f)]) + f)
            else:
                out.append(bytes([more | 2]) + len(f).to_bytes(8, "big") + f)
        return b"".join(out)

    def send_multipart(self, frames: list[bytes], timeout_s: float = 5.0) -> None:
        data = memoryview(self.encode(frames))
        deadline = time.monotonic() + timeout_s
        while data:
            self.drain()
            try:
                n = self.sock.send(data)
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise zmq.Again() from None
                select.select([self.sock], [self.sock], [], 0.05)
                continue
            data = data[n:]

    def drain(self) -> int:
        n = 0
        while True:
            try:
                chunk = self.sock.recv(1 << 16)
            except BlockingIOError:
                return n
            if not chunk:
                raise ConnectionResetError("peer closed the connection")
            n += len(chunk)
            self.received += len(chunk)

    def close(self, linger: int = 0) -> None:
        self.sock.close()


def _socket(ctx: zmq.Context[Any], kind: str, endpoint: str, p: FuzzParams) -> Any:
    if kind == "raw-xsub":
        return RawZmtp(endpoint, b"XSUB", p.send_timeout_s)
    types = {"dealer": zmq.DEALER, "pub": zmq.PUB}
    s = ctx.socket(types[kind])
    s.linger = 0
    s.sndtimeo = int(p.send_timeout_s * 1000)
    s.rcvhwm = 10_000
    if kind == "pub":
        s.sndhwm = 10_000
        s.setsockopt(zmq.XPUB_NODROP, 1)  # back-pressure instead of silent drops
    else:
        s.immediate = True  # nothing queues for a peer that is gone: a send times out
    s.connect(endpoint)
    return s


def blast(
    name: str,
    kind: str,
    endpoint: str,
    n: int,
    mutator: Mutator,
    p: FuzzParams,
    frame_fn: Callable[[], list[bytes]] | None = None,
    alive: Callable[[], bool] = lambda: True,
    progress: Any = None,
) -> TargetResult:
    """Send `n` frames to `endpoint` from a `kind` socket (replaced every `churn` frames, and
    whenever a send times out or the peer drops us). Stops early when the target process
    died (`alive`) or accepted nothing for `stuck_s`."""
    r = TargetResult(name, endpoint, replies_read=kind != "dealer")
    ctx = zmq.Context()
    nxt = frame_fn or mutator.next
    t0 = last_ok = time.monotonic()
    sock: Any = None

    def fresh() -> Any:
        nonlocal sock
        if sock is not None:
            with contextlib.suppress(OSError, zmq.ZMQError):
                r.received += _drain(sock)
            sock.close(0)
            sock = None
            r.reconnects += 1
        while sock is None:
            try:
                sock = _socket(ctx, kind, endpoint, p)
            except OSError:  # a raw peer refused: the target may be restarting
                if time.monotonic() - last_ok > p.stuck_s:
                    raise
                time.sleep(0.2)
        if kind == "pub":
            time.sleep(0.2)  # the hub's subscriptions reach the new publisher
        return sock

    try:
        fresh()
        while r.sent < n:
            if r.sent % 1000 == 0 and not alive():
                r.stuck = f"the target process died after {r.sent} frames"
                break
            if r.sent and r.sent % p.churn == 0:
                fresh()
            frames = nxt()
            try:
                sock.send_multipart(frames)
                r.sent += 1
                if progress is not None:
                    progress.value = r.sent
                last_ok = time.monotonic()
                if r.sent % 64 == 0:
                    r.received += _drain(sock)
            except (zmq.Again, OSError):  # OSError: the raw peer dropped us
                r.send_timeouts += 1
                if not alive():
                    r.stuck = f"the target process died after {r.sent} frames"
                    break
                if time.monotonic() - last_ok > p.stuck_s:
                    r.stuck = f"no frame accepted for {p.stuck_s:g} s after {r.sent} frames"
                    break
                fresh()
        with contextlib.suppress(OSError, zmq.ZMQError):
            r.received += _drain(sock)
    except OSError as e:
        r.stuck = f"cannot connect for {p.stuck_s:g} s after {r.sent} frames: {e}"
    finally:
        r.seconds = time.monotonic() - t0
        if sock is not None:
            sock.close(0)
        ctx.term()
    return r


def raw_tcp(endpoints: list[str], n: int, rng: random.Random) -> TargetResult:
    """`n` plain TCP connections spread over `endpoints`: random bytes, a cut ZMTP greeting,
    a greeting with a lying mechanism, then close."""
    r = TargetResult("raw-tcp", ", ".join(e.rsplit(":", 1)[1] for e in endpoints))
    greeting = b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"NULL" + b"\x00" * 16
    payloads = [
        lambda: rng.randbytes(rng.randrange(1, 2000)),
        lambda: greeting[: rng.randrange(1, len(greeting))],
        lambda: greeting + b"\x00" * 20 + rng.randbytes(200),
        lambda: greeting.replace(b"NULL", b"CURV") + rng.randbytes(64),
        lambda: greeting + b"\x04\xff" + rng.randbytes(300),  # a command with a huge size
        lambda: b"\xff" + b"\xff" * 8 + b"\x7f" + rng.randbytes(100),  # length 2^64-1
    ]
    t0 = time.monotonic()
    for i in range(n):
        host, port = endpoints[i % len(endpoints)].rsplit("/", 1)[1].rsplit(":", 1)
        try:
            with socket.create_connection((host, int(port)), timeout=2) as s:
                s.sendall(rng.choice(payloads)())
                s.settimeout(0.005)
                with contextlib.suppress(OSError):
                    r.received += len(s.recv(4096))
            r.sent += 1
        except OSError:
            r.send_timeouts += 1
    r.seconds = time.monotonic() - t0
    return r


# --- checks: still alive, still answering ---------------------------------------------------
class Checker:
    def __init__(self, fleet: ProcFleet, p: FuzzParams) -> None:
        self.fleet, self.p = fleet, p
        self.probe_seq = 0

    def alive(self) -> dict[str, str]:
        return {
            f"{n} alive": "ok" if rc is None else f"exited with {rc}: {self.fleet.child(n).tail(3)}"
            for n in self.fleet.components()
            for rc in [self.fleet.child(n).exited()]
        }

    def agent(self) -> tuple[str, int]:
        """A real submit gets `ok` (retrying while fuzzed work drains the queue)."""
        deadline = time.monotonic() + self.p.answer_timeout_s
        last = ""
        while time.monotonic() < deadline:
            try:
                r = submit(self.fleet.intake[AGENT], "The treaty requires", 2, 10)
            except FpmonError as e:
                last = str(e)
                continue
            if r.status == "ok":
                return "ok", r.seq
            last = f"{r.status}: {r.reason}"
            time.sleep(0.5)
        return f"no ok reply within {self.p.answer_timeout_s:g} s ({last})", -1

    def daemon(self) -> str:
        client = StateClient(self.fleet.state)
        try:
            reply = wait_for(lambda: client.request(2.0), self.p.answer_timeout_s, 0)
        finally:
            client.close()
        return "ok" if reply is not None else "no StateReply"

    def daemon_verifies(self, seq: int) -> str:
        """The daemon's verified chain head of the agent reaches `seq` (commits still flow)."""
        if seq < 0:
            return "no commit to look for"
        client = StateClient(self.fleet.state)
        head, seen = -1, None

        def reached() -> bool:
            nonlocal head, seen
            r = client.request(2.0)
            if r is not None and AGENT in r.nodes:
                seen = r.nodes[AGENT]
                head = seen.chain_head_seq
            return head >= seq

        try:
            ok = wait_for(reached, self.p.answer_timeout_s, 0.2)
        finally:
            client.close()
        if ok:
            return "ok"
        st = self.fleet.agents[AGENT].status()
        why = f"daemon's verified head of {AGENT} is {head}, not {seq}"
        if seen is not None:
            why += (
                f" (signed head {seen.signed_head_seq}, commits {seen.commits}, "
                f"rejects {dict(seen.rejects)}; agent published {st.get('published')})"
            )
        return why

    def hub(self) -> str:
        """A valid commit from a fresh publisher reaches a fresh subscriber."""
        ctx = zmq.Context()
        pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
        for s in (pub, sub):
            s.linger = 0
        sub.subscribe(b"commit")
        sub.connect(self.fleet.hub_xpub)
        pub.connect(self.fleet.hub_xsub)
        self.probe_seq += 1
        c = Commit(
            node="fuzz-probe",
            t=time.time(),
            seq=self.probe_seq,
            request_id="probe",
            record_digest=bytes(32),
            chain=bytes(32),
            setup=Setup().to_map(),
            model="tiny",
            prompt_tokens=1,
            output_tokens=1,
        )
        deadline = time.monotonic() + self.p.answer_timeout_s
        try:
            while time.monotonic() < deadline:
                pub.send_multipart(encode(c))
                if sub.poll(200):
                    for _ in range(10_000):
                        try:
                            m = decode(sub.recv_multipart(zmq.NOBLOCK), expect=("commit",))
                        except zmq.Again:
                            break
                        except WireError:
                            continue
                        if (
                            isinstance(m, Commit)
                            and m.node == "fuzz-probe"
                            and m.seq == self.probe_seq
                        ):
                            return "ok"
            return "a valid commit did not flow through the hub"
        finally:
            pub.close(0)
            sub.close(0)
            ctx.term()

    def agent_feed(self) -> str:
        """The agent's own telemetry (1 Hz) reaches a fresh subscriber on the hub."""
        ctx = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.linger = 0
        sub.subscribe(b"telemetry")
        sub.connect(self.fleet.hub_xpub)
        deadline = time.monotonic() + min(self.p.answer_timeout_s, 15.0)
        try:
            while time.monotonic() < deadline:
                if sub.poll(200):
                    try:
                        m = decode(sub.recv_multipart(), expect=("telemetry",))
                    except WireError:
                        continue
                    if m.node == AGENT:
                        return "ok"
            return f"no telemetry of {AGENT} through the hub (agent -> hub path broken)"
        finally:
            sub.close(0)
            ctx.term()

    def daemon_hears(self) -> str:
        """The daemon gets the agent's telemetry (1 Hz) after this check starts (hub -> daemon
        path): a frame still in flight when the fuzz stopped may deafen it a moment later."""
        client = StateClient(self.fleet.state)
        last, since = 0.0, time.time() + 1.0

        def fresh() -> bool:
            nonlocal last
            r = client.request(2.0)
            if r is not None and AGENT in r.nodes:
                last = r.nodes[AGENT].last_telemetry_t
            return last > since

        try:
            ok = wait_for(fresh, min(self.p.answer_timeout_s, 15.0), 0.5)
        finally:
            client.close()
        age = f"{time.time() - last:.0f} s ago" if last else "never"
        return "ok" if ok else f"daemon last heard {AGENT} {age} (hub -> daemon path broken)"

    def all(self) -> dict[str, str]:
        """Every check; one that needs a dead process is "not checked" (no waiting on it)."""
        out = self.alive()
        dead = [n for n in self.fleet.components() if out[f"{n} alive"] != "ok"]

        def run(name: str, needs: tuple[str, ...], fn: Callable[[], str]) -> None:
            gone = [n for n in needs if n in dead]
            out[name] = f"not checked: {', '.join(gone)} dead" if gone else fn()

        run("hub forwards a commit", ("hub",), self.hub)
        run("agent's telemetry flows through the hub", ("hub", AGENT), self.agent_feed)
        run("daemon hears the agent", ("hub", AGENT, "replay"), self.daemon_hears)
        run("daemon answers StateRequest", ("replay",), self.daemon)
        seq = -1

        def serve() -> str:
            nonlocal seq
            status, seq = self.agent()
            return status

        run("agent serves a submit", (AGENT,), serve)
        if out["daemon hears the agent"] != "ok":
            out["daemon verifies the agent's new commit"] = "not checked: the daemon hears nothing"
        else:
            run(
                "daemon verifies the agent's new commit",
                ("hub", AGENT, "replay"),
                lambda: self.daemon_verifies(seq),
            )
        return out


# Which process to restart when a check fails, so the next target starts from a sound fleet.
BLAME = {
    "hub alive": "hub",
    "hub forwards a commit": "hub",
    "agent's telemetry flows through the hub": "hub",
    "replay alive": "replay",
    "daemon hears the agent": "replay",
    "daemon answers StateRequest": "replay",
    "daemon verifies the agent's new commit": "replay",
    f"{AGENT} alive": AGENT,
    "agent serves a submit": AGENT,
}


def heal(fleet: ProcFleet, checks: dict[str, str], check: Checker) -> list[str]:
    """Restart every process a failed check blames (killed first if still running); a
    restarted daemon replays one record first (its engine loaded: RSS comparable again)."""
    failed = [k for k, v in checks.items() if v != "ok" and not v.startswith("not checked")]
    broken = sorted({BLAME.get(k, "") for k in failed} - {""})
    for name in broken:
        fleet.kill(name)
        fleet.restart(name)
        if name == "hub":
            fleet.wait_hub()
        elif name == "replay":
            fleet.wait_state()
    if "replay" in broken:
        n = _verdicts(fleet)
        check.agent()
        wait_for(lambda: _verdicts(fleet) > n, check.p.answer_timeout_s, 0.5)
    return broken


# --- the run ----------------------------------------------------------------------------------
def _counters(fleet: ProcFleet) -> dict[str, float]:
    """Reject counters of the agent (status file) and the daemon (Prometheus), flattened."""
    time.sleep(1.2)  # both are refreshed once a second
    st = fleet.agents[AGENT].status()
    out: dict[str, float] = {"agent served": float(st.get("served", 0))}
    for where, by in st.get("rejects", {}).items():
        for reason, n in by.items():
            out[f"agent {where}:{reason}"] = float(n)
    for k, n in st.get("auth_denied", {}).items():
        out[f"agent auth:{k}"] = float(n)
    m = metrics(fleet.metrics_port)
    for reason, n in labelled(m, "fpmon_replay_rejected_frames_total", "reason").items():
        out[f"daemon:{reason}"] = n
    for kind, n in labelled(m, "fpmon_replay_alerts_total", "kind").items():
        out[f"daemon alerts:{kind}"] = n
    return out


def _delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What advanced; a counter that went down (its process restarted) counts from zero."""
    out = {}
    for k, v in after.items():
        d = v - before.get(k, 0.0)
        d = v if d < 0 else d
        if d:
            out[k] = d
    return out


def _verdicts(fleet: ProcFleet) -> int:
    client = StateClient(fleet.state)
    try:
        r = client.request(2.0)
    finally:
        client.close()
    return sum(sum(s.verdicts.values()) for s in r.nodes.values()) if r else 0


def _tracebacks(fleet: ProcFleet) -> dict[str, int]:
    out = {}
    for n in fleet.components():
        try:
            out[n] = fleet.child(n).log.read_text(errors="replace").count("Traceback")
        except OSError:
            out[n] = -1
    return out


def run(p: FuzzParams, say: Callable[[str], None] = lambda s: None) -> FuzzResult:
    tmp = None
    if p.workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="fpmon-fuzz-")
        workdir = Path(tmp.name)
    else:
        workdir = Path(p.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
    fleet = ProcFleet(
        workdir,
        1,
        sampling_rate=1.0,  # every commit the agent makes is replayed: the daemon keeps working
        agent_sections={"batching": {"max_tokens_limit": 4, "max_queue": 8, "max_batch": 2}},
    )
    t_start = time.monotonic()
    sink = None
    try:
        say(f"starting hub, agent {AGENT} and the replay daemon in {workdir}")
        fleet.start()
        check = Checker(fleet, p)
        failures: list[str] = []
        first = check.all()  # also warms up: the daemon replays the agent's first record
        failures += [f"before fuzzing: {k}: {v}" for k, v in first.items() if v != "ok"]
        wait_for(lambda: _verdicts(fleet) > 0, p.answer_timeout_s, 0.5)
        rss: dict[str, list[tuple[str, int, int]]] = {n: [] for n in fleet.components()}

        def sample_rss(when: str) -> None:
            for n, pid in fleet.pids().items():
                rss[n].append((when, rss_bytes(pid), pid))

        sample_rss("before")
        totals: dict[str, float] = {}
        tb_before = _tracebacks(fleet)
        sink = _Sink(fleet.hub_xpub)
        sink.start()
        time.sleep(0.5)
        nodes = [AGENT, "fuzz-node", "drill-1", "n" * 128, "ñødé"]
        corpus = valid_corpus(nodes)
        rng = random.Random(p.seed)
        results: list[TargetResult] = []
        for name in p.targets:
            n = p.count(name)
            say(f"{name}: {n} {'connections' if name == 'raw-tcp' else 'frames'}")
            sub_rng = random.Random(rng.random())
            before = _counters(fleet)
            if name == "raw-tcp":
                eps = [
                    fleet.hub_xsub,
                    fleet.hub_xpub,
                    fleet.state,
                    fleet.intake[AGENT],
                    fleet.openings[AGENT],
                ]
                r = raw_tcp(eps, n, sub_rng)
            else:
                r = _fuzz_target(name, fleet, n, corpus, sub_rng, p, sink, workdir / "fuzzer", say)
            time.sleep(1.0)  # frames in flight land before the checks
            r.counted = _delta(before, _counters(fleet))
            for k, v in r.counted.items():
                totals[k] = totals.get(k, 0.0) + v
            r.checks = check.all()
            if r.stuck:
                failures.append(f"{name}: {r.stuck}")
            for k, said in r.checks.items():
                if said != "ok" and not said.startswith("not checked"):
                    failures.append(f"after {name}: {k}: {said}")
            results.append(r)
            sample_rss(f"after {name}")
            say(
                f"{name}: {r.sent} in {r.seconds:.1f} s ({r.rate:,.0f}/s), "
                f"{sum(v == 'ok' for v in r.checks.values())}/{len(r.checks)} checks ok"
            )
            crashed = fleet.crashed()
            for c, rc in crashed.items():  # died after its alive check
                if r.checks.get(f"{c} alive") == "ok":
                    failures.append(f"after {name}: {c} died ({rc}): {fleet.child(c).tail(2)}")
                    r.checks[f"{c} alive"] = f"died ({rc})"
            restarted = heal(fleet, r.checks, check)
            if restarted:
                r.restarted = restarted
                sample_rss("restart")  # the baseline of the restarted processes
                say(f"restarted {', '.join(restarted)} for the next target")
        sink.stop()
        sink_count = sink.count
        sink = None
        sample_rss("after all")
        client = StateClient(fleet.state)
        state = client.request(5.0)
        client.close()
        tb_after = _tracebacks(fleet)
        rcs = fleet.stop()
        for c, code in rcs.items():  # None: never started
            if code not in (0, None):
                failures.append(f"{c} exited {code} on SIGTERM after the fuzz")
        return FuzzResult(
            params=p,
            targets=results,
            rss=rss,
            counters=totals,
            daemon_state_rejects={n: dict(s.rejects) for n, s in state.nodes.items()}
            if state
            else {},
            tracebacks={n: tb_after.get(n, 0) - tb_before.get(n, 0) for n in tb_after},
            failures=failures,
            duration_s=time.monotonic() - t_start,
            extra={
                "hub_forwarded_to_sink": sink_count,
                "daemon_verdicts": dict(state.nodes[AGENT].verdicts) if state else {},
            },
        )
    finally:
        if sink is not None:
            sink.stop()
        fleet.force_stop()
        if tmp is not None:
            tmp.cleanup()


def _fuzz_target(
    name: str,
    fleet: ProcFleet,
    n: int,
    corpus: dict[str, list[list[bytes]]],
    rng: random.Random,
    p: FuzzParams,
    sink: _Sink,
    errdir: Path,
    say: Callable[[str], None],
) -> TargetResult:
    sink.ensure()
    before = sink.count
    owner = {
        "hub-xsub": "hub",
        "hub-xpub": "hub",
        "daemon-sub": "replay",
        "daemon-state": "replay",
    }.get(name, AGENT)
    alive = _alive_pid(fleet.pids()[owner])
    seed = rng.random()
    if name not in TARGETS or name == "raw-tcp":
        raise ValueError(f"unknown target {name!r}; use {', '.join(TARGETS)}")

    def job(count: int, attempt: int, progress: Any) -> TargetResult:
        jr = random.Random(f"{seed}:{attempt}")  # a replacement client sends other frames
        sub: dict[str, list[list[bytes]]] = corpus
        extra: dict[str, float] = {}
        kind, endpoint, frame_fn = "pub", fleet.hub_xsub, None
        if name == "daemon-sub":
            sub = {t: corpus[t] for t in ("commit", "head", "telemetry")}
        elif name == "daemon-state":
            kind, endpoint, extra = "dealer", fleet.state, {"state?": 8}
        elif name == "agent-intake":
            kind, endpoint, extra = "dealer", fleet.intake[AGENT], {"submit": 8}
        elif name == "agent-openings":
            kind, endpoint, extra = "dealer", fleet.openings[AGENT], {"open": 8, "links?": 4}
        m = Mutator(jr, sub, extra or None, huge_every=p.huge_every)
        if name == "hub-xpub":
            kind, endpoint, frame_fn = "raw-xsub", fleet.hub_xpub, _subscriptions(jr, m)
        r = blast(name, kind, endpoint, count, m, p, frame_fn, alive=alive, progress=progress)
        r.ops = {k: v for k, v in m.by_op.items() if v}
        return r

    r = isolated(name, n, job, errdir, say)
    if name in ("hub-xsub", "daemon-sub"):
        time.sleep(0.5)
        r.received = sink.count - before  # what the hub forwarded to our own subscriber
    return r


def _subscriptions(rng: random.Random, m: Mutator) -> Callable[[], list[bytes]]:
    """Frames for an XSUB at the hub's XPUB: (un)subscriptions to real, random and huge
    topics, and mutated frames (which the hub passes upstream to every publisher)."""
    real = [t.encode() for t in m.corpus]
    count = [0]

    def nxt() -> list[bytes]:
        count[0] += 1
        r = rng.random()
        if m.huge_every and (count[0] in (100, 1000) or count[0] % m.huge_every == 0):
            return [b"\x01" + rng.randbytes(5 << 20)]  # a 5 MiB subscription
        if r < 0.25:
            return [b"\x01" + rng.choice(real)[: rng.randrange(0, 8)]]
        if r < 0.45:
            return [b"\x01" + rng.randbytes(rng.randrange(1, 64))]
        if r < 0.6:
            return [bytes([rng.choice((0, 1))]) + rng.randbytes(rng.randrange(0, 64))]
        if r < 0.65:
            return [b"\x00" + rng.choice(real)]  # unsubscribe what others subscribed
        return m.next()

    return nxt


# --- report -----------------------------------------------------------------------------------
def print_report(r: FuzzResult, out: Any = None) -> None:
    from fpmon.testing.drills.report import lines, mib, table

    def checks(t: TargetResult) -> str:
        bad = [t.stuck] if t.stuck else []
        bad += [k for k, v in t.checks.items() if v != "ok" and not v.startswith("not checked")]
        return "FAIL " + "; ".join(bad) if bad else "ok"

    def rejected(t: TargetResult) -> str:
        n = sum(v for k, v in t.counted.items() if ":" in k and "alerts" not in k)
        return f"{n:,.0f}"

    total = sum(t.sent for t in r.targets if t.name != "raw-tcp")
    table(
        f"socket fuzz: {total:,} frames at {len(r.targets)} targets, seed {r.params.seed}, "
        f"{r.duration_s:.0f} s",
        [
            "target",
            "port",
            "sent",
            "frames/s",
            "came back",
            "rejects counted",
            "reconnects",
            "checks after (then restarted)",
        ],
        [
            (
                t.name,
                t.endpoint.rsplit(":", 1)[-1] if t.name != "raw-tcp" else "all",
                f"{t.sent:,}",
                f"{t.rate:,.0f}",
                f"{t.received:,}" if t.replies_read else "not read",
                rejected(t),
                t.reconnects,
                checks(t) + (f" -> {', '.join(t.restarted)}" if t.restarted else ""),
            )
            for t in r.targets
        ],
        out,
    )
    procs = list(r.rss)
    rows: list[list[str]] = [["before", *(mib(r.rss[n][0][1]) for n in procs)]]
    base = {n: r.rss[n][0] for n in procs}
    steps = [w for w, _, _ in r.rss[procs[0]][1:]] if procs else []
    for i, when in enumerate(steps, start=1):
        row = [when.replace("after ", "")]
        for n in procs:
            w, val, pid = r.rss[n][i]
            prev = base[n]
            base[n] = r.rss[n][i]
            if w == "restart":
                row.append("")
            elif not val:
                row.append("dead")
            elif pid != prev[2]:
                row.append("new pid")
            else:
                row.append(f"{(val - prev[1]) / (1 << 20):+.1f}")
        if when != "restart":
            rows.append(row)
    rows.append(["final", *(mib(r.rss[n][-1][1]) for n in procs)])
    table(
        "RSS: before, change in MiB after each target (a restarted process: from its restart, "
        "warmed up), final",
        ["step", *procs],
        rows,
        out,
    )
    c = r.counters

    def group(prefix: str) -> str:
        items = sorted((k[len(prefix) :], v) for k, v in c.items() if k.startswith(prefix))
        return ", ".join(f"{k} {v:,.0f}" for k, v in items) or "0"

    table(
        "counters during the fuzz (per target, summed: restarts count from zero)",
        ["where", "by reason"],
        [
            ("agent intake rejects", group("agent intake:")),
            ("agent openings rejects", group("agent openings:")),
            ("agent served (fuzzed submits that were valid)", f"{c.get('agent served', 0):,.0f}"),
            ("daemon rejects (Prometheus)", group("daemon:")),
            ("daemon alerts", group("daemon alerts:")),
            (
                "daemon per node (last state)",
                "; ".join(f"{n}: {d}" for n, d in r.daemon_state_rejects.items() if d) or "0",
            ),
            ("hub forwarded to a '' subscriber", f"{r.extra.get('hub_forwarded_to_sink', 0):,}"),
            ("daemon verdicts on the agent", r.extra.get("daemon_verdicts", {})),
            ("new tracebacks in logs", ", ".join(f"{n} {k}" for n, k in r.tracebacks.items())),
        ],
        out,
    )
    aborts = [f"{t.name}: {a}" for t in r.targets for a in t.fuzzer_aborts]
    if aborts:
        lines(
            "the fuzzer's own clients aborted in libzmq (not a target; replaced, frames resent):",
            aborts,
            out,
        )
    internal = {k: v for k, v in c.items() if k.startswith("daemon:internal")}
    if internal:
        lines(
            "daemon internal errors (messages that passed the wire contract but raised):",
            [f"{k}: {v:.0f}" for k, v in internal.items()],
            out,
        )
    if r.failures:
        lines(f"FAIL ({len(r.failures)}):", r.failures, out)


def to_json(r: FuzzResult) -> str:
    return json.dumps(
        {
            "targets": [{**t.__dict__, "rate": t.rate} for t in r.targets],
            "rss": r.rss,
            "failures": r.failures,
            "tracebacks": r.tracebacks,
            "counters": r.counters,
        },
        indent=1,
        default=str,
    )
