"""The one worker that owns the monitor's ZeroMQ sockets (and the recorder / player of feeds).

`Feed` is a thread: a SUB socket connected to the hub's XPUB (or to every publisher listed),
a DEALER to the replay daemon's `state` ROUTER for a snapshot at start (zguide Clone pattern:
subscribe first, then ask for state, so nothing falls between the two; the model drops
verdicts it already has) and again every `state_refresh_s` (node summaries carry figures no
published message does: the verifier's hidden-work accounting; a refresh asks only for the
verdicts and alerts past the last reply's `stream_seq`), and a socket monitor so an endpoint
that goes away shows as `lost` and comes back by itself (ZeroMQ reconnects; we only report).
A connection libzmq dropped for a protocol error never comes back and says nothing: a SUB
silent for `deaf_after_s` shows as `deaf` and is made anew (`fpmon.deafness`). Frames are
decoded with `fpmon.wire.decode` under hard limits; rejects are counted by reason.

Decoded messages go into a bounded inbox; `notify()` is called once per burst, so the UI
coalesces a burst into one wake-up. Nothing here imports Textual.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import msgspec
import zmq
from zmq.utils.monitor import recv_monitor_message

from fpmon import signing
from fpmon.deafness import SubWatchdog
from fpmon.errors import FpmonError
from fpmon.monitor.config import CurveConfig
from fpmon.session import CurveClient, Session
from fpmon.wire import Limits, Message, StateReply, StateRequest, WireError, decode
from fpmon.wire.codec import FRAME_SLACK

log = logging.getLogger(__name__)

TOPICS = ("commit", "head", "telemetry", "verdict", "alert")
STATE_TOPICS = ("state",)
MONITOR_EVENTS = zmq.EVENT_CONNECTED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
RECORD_MAGIC = b"fpmon-feed-1\n"


@dataclass(frozen=True)
class EndpointState:
    endpoint: str
    state: str  # connecting, live, lost, deaf (connected, but nothing heard: resubscribed)


@dataclass(frozen=True)
class Rejected:
    reason: str


@dataclass(frozen=True)
class Reset:
    """Playback seeked backwards: start from an empty model."""


@dataclass(frozen=True)
class Position:
    """Playback position, seconds from the recording's start, and its length."""

    at: float
    length: float
    paused: bool


class Authenticator:
    """Passes on only what the verifier signed: verdicts, alerts, state replies and the verdicts
    and alerts inside those. Anyone who can publish could otherwise flag an honest node."""

    def __init__(self, verifier_key: bytes) -> None:
        self.key = signing.public_key(verifier_key)

    def admit(self, msg: Message) -> tuple[Message | None, list[str]]:
        """The message to pass on (None: drop it) and why each dropped part was dropped."""
        if msg.TOPIC not in signing.SIGNED_TOPICS:
            return msg, []
        why = signing.check(self.key, msg)
        if why is not None:
            return None, [why]
        if isinstance(msg, StateReply):
            return self._entries(msg)
        return msg, []

    def _entries(self, reply: StateReply) -> tuple[Message, list[str]]:
        # Each entry carries its own signature from when it was published; the reply's own
        # signature covers the node summaries as well.
        reasons: list[str] = []

        def signed(entries: list[Any]) -> list[Any]:
            kept = []
            for m in entries:
                why = signing.check(self.key, m)
                if why is None:
                    kept.append(m)
                else:
                    reasons.append(why)
            return kept

        verdicts, alerts = signed(reply.verdicts), signed(reply.alerts)
        return msgspec.structs.replace(reply, verdicts=verdicts, alerts=alerts), reasons


class Inbox:
    """Bounded hand-off from the worker thread to the UI. Drops are counted, never silent."""

    def __init__(self, maxlen: int = 200_000, notify: Callable[[], Any] | None = None) -> None:
        self.items: deque = deque()
        self.maxlen = maxlen
        self.dropped = 0
        self.notify = notify or (lambda: None)

    def put(self, item: Any) -> None:
        if len(self.items) >= self.maxlen:
            self.dropped += 1
            return
        self.items.append(item)

    def drain(self, limit: int = 1 << 30) -> list[Any]:
        out: list[Any] = []
        pop = self.items.popleft
        try:
            while len(out) < limit:
                out.append(pop())
        except IndexError:
            pass
        return out


class Recorder:
    """Appends every received frame as msgpack [wall time, topic, payload] (re-decoded on play)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.f = self.path.open("ab")
            if self.f.tell() == 0:
                self.f.write(RECORD_MAGIC)
        except OSError as e:
            raise FpmonError(f"cannot record the feed to {self.path}: {e}") from None

    def write(self, frames: list[bytes], t: float | None = None) -> None:
        self.f.write(msgpack.packb([time.time() if t is None else t, frames[0], frames[1]]))

    def close(self) -> None:
        self.f.close()


def read_recording(path: str | Path) -> list[tuple[float, list[bytes]]]:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise FpmonError(f"cannot read recording {p}: {e}") from None
    if not data.startswith(RECORD_MAGIC):
        raise FpmonError(f"{p} is not an fpmon feed recording (made with `record = FILE`)")
    out = []
    unpacker = msgpack.Unpacker(raw=False, max_buffer_size=len(data) + 1)
    unpacker.feed(data[len(RECORD_MAGIC) :])
    try:
        for item in unpacker:
            t, topic, payload = item
            out.append((float(t), [bytes(topic), bytes(payload)]))
    except (ValueError, TypeError, msgpack.UnpackException):
        log.warning("recording %s is truncated after %d frames", p, len(out))
    return out


class _Runner:
    """Run in a Textual thread worker (the app) or in a plain thread (`start`, headless)."""

    stopping: threading.Event
    _thread: threading.Thread | None = None

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout: float = 2.0) -> None:
        self.stopping.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)


class Feed(_Runner):
    _mon: zmq.Socket[bytes]  # the SUB's socket monitor, made in _make_sub
    _sub_mon: zmq.Socket[bytes]  # the monitor of the SUB _make_sub made last

    def __init__(
        self,
        inbox: Inbox,
        endpoints: list[str],
        state: str = "",
        *,
        limits: Limits | None = None,
        curve: CurveConfig | None = None,
        record: str | Path | None = "",
        state_timeout_s: float = 2.0,
        state_refresh_s: float = 0.0,
        burst_s: float = 0.02,
        deaf_after_s: float = 10.0,
        verifier_key: bytes | None = None,
    ) -> None:
        self.inbox = inbox
        self.endpoints = list(endpoints)
        self.state_endpoint = state
        self.limits = limits or Limits()
        self.curve = curve
        self.recorder = Recorder(record) if record else None
        self.state_timeout_s = state_timeout_s
        self.state_refresh_s = state_refresh_s  # 0: the state is asked for once
        self._stream_seq = 0  # the last state reply's: a refresh asks only for what is newer
        self.burst_s = burst_s
        self.deaf_after_s = deaf_after_s  # publishers are periodic (~1 s): silence is a fault
        # Without the verifier's key nothing is authenticated (the app says so).
        self.auth = Authenticator(verifier_key) if verifier_key else None
        self._ep_state: dict[str, str] = {}
        self.stopping = threading.Event()
        self.got_state = threading.Event()
        self.ctx = zmq.Context()

    def _session(self, kind: int, expect: tuple[str, ...], server_key: bytes | None) -> Session:
        role = None
        if self.curve is not None:
            key = server_key or self.curve.server_key
            role = CurveClient(key, self.curve.public, self.curve.secret)
        return Session(self.ctx, kind, limits=self.limits, expect=expect, security=role)

    def _state_socket(self) -> Session:
        s = self._session(zmq.DEALER, STATE_TOPICS, self.curve.state_key if self.curve else None)
        s.connect(self.state_endpoint)
        req = StateRequest(
            node=f"monitor-{os.getpid()}", t=time.time(), since_verdicts=self._stream_seq
        )
        s.send(req)
        return s

    def _make_sub(self) -> Session:
        sub = self._session(zmq.SUB, TOPICS, None)
        sub.socket.setsockopt(zmq.RCVHWM, 100_000)
        sub.socket.setsockopt(zmq.RECONNECT_IVL, 200)
        sub.socket.setsockopt(zmq.RECONNECT_IVL_MAX, 2000)
        for t in TOPICS:
            sub.socket.setsockopt(zmq.SUBSCRIBE, t.encode())
        # The monitor before any connect: a connection made before it is attached is never
        # reported, and its endpoint showed "connecting" while its messages flowed (seen once
        # in a CI run of test_feed_decodes_counts_rejects_and_records).
        self._sub_mon = sub.socket.get_monitor_socket(MONITOR_EVENTS)
        for ep in self.endpoints:
            sub.connect(ep)
        return sub

    def _watch_sub(self, poller: zmq.Poller) -> None:
        """The SUB, its socket monitor, and the watchdog that remakes both when deaf."""

        def replaced(old: Session, new: Session) -> None:
            poller.unregister(old.socket)
            poller.unregister(self._mon)
            old.socket.disable_monitor()
            self._mon.close(0)
            self._mon = self._sub_mon  # attached by _make_sub before it connected
            poller.register(new.socket, zmq.POLLIN)
            poller.register(self._mon, zmq.POLLIN)

        self.watchdog = SubWatchdog(self._make_sub, self.deaf_after_s, replaced)
        self._mon = self._sub_mon
        poller.register(self.watchdog.sock.socket, zmq.POLLIN)
        poller.register(self._mon, zmq.POLLIN)

    def _endpoint(self, ep: str, state: str) -> None:
        if self._ep_state.get(ep) != state:
            self._ep_state[ep] = state
            self.inbox.put(EndpointState(ep, state))

    def _sub_events(self, events: dict[Any, int]) -> int:
        """Socket-monitor events, the SUB's messages, deafness: how many inbox items."""
        n = 0
        watch = self.watchdog
        if self._mon in events:
            self._monitor_events(self._mon)
            n += 1
        if watch.sock.socket in events:
            watch.heard()
            n += self._drain(watch.sock)
            for ep, state in list(self._ep_state.items()):
                if state == "deaf":  # heard again on the new socket
                    self._endpoint(ep, "live")
        silent = watch.check()
        if silent is not None:
            log.warning("heard nothing for %.0f s on %s: resubscribed", silent, self.endpoints)
            for ep in self.endpoints:
                self._endpoint(ep, "deaf")
            n += 1
        return n

    def run(self) -> None:
        for ep in self.endpoints:
            self._endpoint(ep, "connecting")
        poller = zmq.Poller()
        self._watch_sub(poller)
        state_sock = None
        state_deadline = 0.0
        next_refresh = float("inf")
        if self.state_endpoint:
            self.inbox.put(EndpointState(self.state_endpoint, "connecting"))
            state_sock = self._state_socket()
            poller.register(state_sock.socket, zmq.POLLIN)
            state_deadline = time.monotonic() + self.state_timeout_s
        self.inbox.notify()
        try:
            while not self.stopping.is_set():
                events = dict(poller.poll(100))
                n = self._sub_events(events)
                if state_sock is not None and state_sock.socket in events:
                    if self._drain(state_sock, once=True):
                        self.got_state.set()
                        self.inbox.put(EndpointState(self.state_endpoint, "live"))
                        poller.unregister(state_sock.socket)
                        state_sock.close(0)
                        state_sock = None
                        if self.state_refresh_s > 0:
                            next_refresh = time.monotonic() + self.state_refresh_s
                        n += 1
                elif state_sock is None and time.monotonic() >= next_refresh:
                    next_refresh = float("inf")
                    state_sock = self._state_socket()
                    poller.register(state_sock.socket, zmq.POLLIN)
                    state_deadline = time.monotonic() + self.state_timeout_s
                elif state_sock is not None and time.monotonic() > state_deadline:
                    # Lazy Pirate: no answer in time; report, drop the socket, ask again.
                    self.inbox.put(EndpointState(self.state_endpoint, "lost"))
                    poller.unregister(state_sock.socket)
                    state_sock.close(0)
                    state_sock = self._state_socket()
                    poller.register(state_sock.socket, zmq.POLLIN)
                    state_deadline = time.monotonic() + max(self.state_timeout_s, 2.0)
                    n += 1
                if n:
                    self.inbox.notify()
        finally:
            self.watchdog.sock.socket.disable_monitor()
            self._mon.close(0)
            for s in (self.watchdog.sock, state_sock):
                if s is not None:
                    s.close(0)
            self.ctx.term()
            if self.recorder:
                self.recorder.close()

    def _drain(self, session: Session, once: bool = False) -> int:
        """Read what is waiting (for at most `burst_s`) so one wake-up carries a burst."""
        n = 0
        end = time.monotonic() + self.burst_s
        while True:
            got = session.recv()
            if got is None:
                break
            msg: Message | None = got.msg  # None: rejected, or the authenticator dropped it
            if got.error is not None:
                self.inbox.put(Rejected(got.error.reason))  # the model counts these
                continue
            assert msg is not None
            if self.auth is not None:
                msg, reasons = self.auth.admit(msg)
                for why in reasons:
                    self.inbox.put(Rejected(why))
                if msg is None:
                    continue
            if isinstance(msg, StateReply):
                self._stream_seq = max(self._stream_seq, msg.stream_seq)
            if self.recorder:
                self.recorder.write(got.body)
            self.inbox.put(msg)
            n += 1
            if once or time.monotonic() > end:
                break
        return n

    def _monitor_events(self, mon: zmq.Socket) -> None:
        while True:
            try:
                ev = recv_monitor_message(mon, zmq.NOBLOCK)
            except zmq.Again:
                return
            ep: str | bytes = ev.get("endpoint", b"")
            ep = ep.decode() if isinstance(ep, bytes) else str(ep)
            kind = ev["event"]
            if kind == zmq.EVENT_CONNECTED:
                # Connected is not heard: a deaf endpoint stays deaf until a message arrives.
                if self._ep_state.get(ep) != "deaf":
                    self._endpoint(ep, "live")
            else:  # disconnected, or refused and retrying: ZeroMQ keeps trying by itself
                self._endpoint(ep, "lost")


class Player(_Runner):
    """Plays a recording back into an inbox at its own pace (x `speed`), with pause and seek."""

    def __init__(self, inbox: Inbox, path: str | Path, speed: float = 1.0,
                 limits: Limits | None = None, verifier_key: bytes | None = None,
                 ) -> None:  # fmt: skip
        self.inbox = inbox
        self.auth = Authenticator(verifier_key) if verifier_key else None
        self.frames = read_recording(path)
        self.t0 = self.frames[0][0] if self.frames else 0.0
        self.length = (self.frames[-1][0] - self.t0) if self.frames else 0.0
        self.speed = speed
        self.limits = limits or Limits()
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._i = 0  # next frame to play
        self._at = 0.0  # position, seconds from start
        self._paused = False
        self._seek: float | None = None

    def toggle_pause(self) -> None:
        with self._lock:
            self._paused = not self._paused

    def seek(self, at: float) -> None:
        with self._lock:
            self._seek = min(max(0.0, at), self.length)

    def seek_by(self, delta: float) -> None:
        """Relative to the pending target, so quick repeated presses add up."""
        with self._lock:
            base = self._seek if self._seek is not None else self._at
            self._seek = min(max(0.0, base + delta), self.length)

    @property
    def position(self) -> Position:
        return Position(self._at, self.length, self._paused)

    def _emit(self, frames: list[bytes]) -> None:
        msg: Message | None  # None: the authenticator dropped it
        try:
            msg = decode(frames, self.limits, expect=TOPICS + STATE_TOPICS)
        except WireError as e:
            self.inbox.put(Rejected(e.reason))
            return
        if self.auth is not None:
            msg, reasons = self.auth.admit(msg)
            for why in reasons:
                self.inbox.put(Rejected(why))
        if msg is not None:
            self.inbox.put(msg)

    def run(self) -> None:
        last = time.monotonic()
        while not self.stopping.is_set():
            with self._lock:
                seek, self._seek = self._seek, None
                paused = self._paused
            now = time.monotonic()
            if seek is not None:
                if seek < self._at or self._i == 0:
                    self.inbox.put(Reset())
                    self._i = 0
                # Fast-forward: everything up to the target at once, then play on from there.
                while self._i < len(self.frames) and self.frames[self._i][0] - self.t0 <= seek:
                    self._emit(self.frames[self._i][1])
                    self._i += 1
                self._at = seek
            elif not paused:
                self._at = min(self.length, self._at + (now - last) * self.speed)
                while self._i < len(self.frames) and self.frames[self._i][0] - self.t0 <= self._at:
                    self._emit(self.frames[self._i][1])
                    self._i += 1
            last = now
            self.inbox.put(self.position)
            self.inbox.notify()
            self.stopping.wait(0.1)


def state_snapshot(
    endpoint: str, timeout_s: float = 2.0, curve: CurveConfig | None = None,
    limits: Limits | None = None, verifier_key: bytes | None = None,
) -> StateReply:  # fmt: skip
    """One StateRequest -> StateReply round trip (for `fpmon snapshot`); FpmonError if none.
    With the verifier's key, a reply it did not sign is an error; unsigned entries are left
    out and reported on the log."""
    ctx = zmq.Context()
    role = CurveClient(curve.state_key, curve.public, curve.secret) if curve else None
    s = Session(
        ctx,
        zmq.DEALER,
        limits=limits or Limits(),
        expect=STATE_TOPICS,
        security=role,
        max_frame_bytes=Limits().max_bytes + FRAME_SLACK,
    )
    try:
        s.connect(endpoint)
        s.send(StateRequest(node=f"snapshot-{os.getpid()}", t=time.time()))
        got = s.recv(int(timeout_s * 1000))
        if got is None:
            raise FpmonError(
                f"no answer from the replay daemon's state endpoint {endpoint} within "
                f"{timeout_s:g} s; is `fpmon replay` running there?"
            )
        if got.error is not None:
            raise FpmonError(f"{endpoint} answered with a bad state frame: {got.error}")
        msg: Message | None = got.msg
        assert msg is not None
        if verifier_key:
            checked, reasons = Authenticator(verifier_key).admit(msg)
            if checked is None:
                raise FpmonError(
                    f"{endpoint}: state reply rejected ({reasons[0]}): not signed with the "
                    "[monitor] verifier_key"
                )
            if reasons:
                log.warning("left out %d state entries: %s", len(reasons), sorted(set(reasons)))
            msg = checked
        assert isinstance(msg, StateReply)
        return msg
    finally:
        s.close(0)
        ctx.term()
