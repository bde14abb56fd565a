"""One ZeroMQ socket's wire discipline: limits, security role, framing, decoding, rejects.

A `Session` owns a socket the way jupyter_client's `Session` owns serialization and signing:
components hand it typed messages and get typed messages back, and never touch frames. It
sets the hard cap libzmq enforces before a frame is read (ZMQ_MAXMSGSIZE) and the linger,
makes the socket plain, a Curve server under a ZAP domain, or a Curve client pinning a server
key, binds with one clear error naming the config key, splits and prepends ROUTER envelopes,
decodes under the `Limits` and the topics it `expect`s, and counts every rejected frame by
reason. A bad frame is never fatal: `recv()` hands it back as a `Received` whose `msg` is None
and whose `error` says why, already counted, so the caller may still answer the envelope.

The ZAP authenticator that checks client keys belongs to the context, not to one socket: its
owner (the agent's `Security`, the daemon's state server) configures the domain. Framing and
bounds below this layer are in `fpmon.transport` and `fpmon.wire.codec`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import zmq

from fpmon.transport import bind, curve_client, curve_server, split_envelope
from fpmon.wire.codec import (
    DEFAULT_LIMITS,
    FRAME_SLACK,
    Limits,
    RejectCounter,
    WireError,
    decode,
    encode,
)
from fpmon.wire.messages import Message


@dataclass(frozen=True)
class CurveServer:
    """Encrypt, and let the context's ZAP handler for `domain` decide which keys get in."""

    public: bytes
    secret: bytes
    domain: str


@dataclass(frozen=True)
class CurveClient:
    """Encrypt, pinning the server's Z85 key: whatever arrives was sent by its holder."""

    server_key: bytes | str
    public: bytes
    secret: bytes


Security = CurveServer | CurveClient | None  # None: plain, for loopback and tests


@dataclass(frozen=True, slots=True)
class Received:
    """One message as it came off the socket. `msg` is None when it was rejected: `error`
    names the reason (already counted); the envelope is kept so the peer can be answered."""

    envelope: list[bytes]  # ROUTER: routing id (+ a REQ peer's empty delimiter); else []
    body: list[bytes]  # the frames after the envelope, as received
    msg: Message | None
    error: WireError | None
    user_id: str = ""  # the Curve key ZAP admitted (Z85); "" unless a Curve server

    @property
    def peer(self) -> bytes:
        """Who sent it, for per-peer policy: the Curve key (stable across reconnects), else
        the connection's routing id, else b""."""
        if self.user_id:
            return self.user_id.encode()
        return self.envelope[0] if self.envelope else b""


Admit = Callable[[bytes], str | None]  # a peer -> None to go on, or a reason to reject


class Session:
    """One socket of type `kind`, its limits, security role, framing and reject counts.

    `max_frame_bytes` is the socket's hard cap (default: the payload limit plus the topic
    frame's slack); a frame over it costs the peer its connection, a frame under it but over
    `limits` is read and counted `oversized`. `rejects` may be shared by several sessions
    whose rejections are reported together. `admit` runs on each peer before its message is
    decoded (a rate limit), so a refused peer costs no decode.

    Options with no bearing on the wire contract (HWMs, IMMEDIATE, subscriptions) go straight
    on `.socket` before `bind`/`connect`; `.socket` is also what a `zmq.Poller` registers.
    """

    def __init__(
        self,
        ctx: zmq.Context[Any],
        kind: int,
        *,
        limits: Limits = DEFAULT_LIMITS,
        expect: tuple[str, ...] | None = None,
        security: Security = None,
        max_frame_bytes: int | None = None,
        linger: int = 0,
        rejects: RejectCounter | None = None,
        admit: Admit | None = None,
    ) -> None:
        self.kind = kind
        self.limits = limits
        self.expect = expect
        self.rejects = RejectCounter() if rejects is None else rejects
        self.admit = admit
        self.endpoint = ""  # the one bound (its real port) or last connected to
        self.socket: zmq.Socket[Any] = ctx.socket(kind)
        self.socket.linger = linger
        cap = limits.max_bytes + FRAME_SLACK if max_frame_bytes is None else max_frame_bytes
        self.socket.maxmsgsize = cap
        # Only a Curve server learns who sent a message; reading frames (copy=False) for that
        # costs every other socket a Frame object per part for nothing.
        self._user_ids = isinstance(security, CurveServer)
        if isinstance(security, CurveServer):
            curve_server(self.socket, security.public, security.secret, security.domain)
        elif isinstance(security, CurveClient):
            curve_client(self.socket, security.server_key, security.public, security.secret)

    # -- endpoints ---------------------------------------------------------------------------

    def bind(self, endpoint: str, what: str) -> str:
        """Bind (`tcp://host:0`: any free port); FpmonError naming config key `what`. The
        endpoint actually bound."""
        self.endpoint = bind(self.socket, endpoint, what)
        return self.endpoint

    def connect(self, endpoint: str) -> None:
        self.socket.connect(endpoint)
        self.endpoint = endpoint

    def close(self, linger: int | None = 0) -> None:
        self.socket.close(linger=linger)

    @property
    def closed(self) -> bool:
        return bool(self.socket.closed)

    def poll(self, timeout_ms: int) -> bool:
        """Whether a message is waiting, after at most `timeout_ms`."""
        return bool(self.socket.poll(timeout_ms, zmq.POLLIN))

    # -- receiving ---------------------------------------------------------------------------

    def recv(self, timeout_ms: int = 0) -> Received | None:
        """The next message, waiting at most `timeout_ms` (0: only what is there); None when
        nothing came. Never raises for what the peer sent: a bad frame comes back counted."""
        if timeout_ms and not self.poll(timeout_ms):
            return None
        user_id = ""
        try:
            if self._user_ids:
                parts = self.socket.recv_multipart(zmq.NOBLOCK, copy=False)
                frames = [p.bytes for p in parts]
                # pyzmq types Frame.get as int | str: a named property is a str.
                user_id = cast(str, parts[-1].get("User-Id"))
            else:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None
        envelope, body = self._split(frames)
        if self.admit is not None:
            why = self.admit(Received(envelope, body, None, None, user_id).peer)
            if why is not None:
                return self._rejected(envelope, body, user_id, WireError(why, "not admitted"))
        try:
            msg = decode(body, self.limits, self.expect)
        except WireError as e:
            return self._rejected(envelope, body, user_id, e)
        return Received(envelope, body, msg, None, user_id)

    def _split(self, frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
        if self.kind == zmq.ROUTER:
            return split_envelope(frames)
        if self.kind == zmq.DEALER and len(frames) == 3 and frames[0] == b"":
            # A REP-style peer's empty delimiter: framing, not content.
            return frames[:1], frames[1:]
        return [], frames

    def _rejected(
        self, envelope: list[bytes], body: list[bytes], user_id: str, err: WireError
    ) -> Received:
        self.rejects.add(err)
        return Received(envelope, body, None, err, user_id)

    def reject(self, err: WireError) -> int:
        """Count a rejection the caller's own policy decided (a field out of range); how
        many of that reason so far."""
        self.rejects.add(err)
        return self.rejects[err.reason]

    # -- sending -----------------------------------------------------------------------------

    def send(self, msg: Message, envelope: Sequence[bytes] = (), *, block: bool = True) -> bool:
        """Send `msg` (to the peer `envelope` names, on a ROUTER). False when ZeroMQ would not
        take it: not connected with `block=False` (DEALER with IMMEDIATE), or SNDTIMEO out."""
        return self.forward([*envelope, *encode(msg)], block=block)

    def forward(self, frames: list[bytes], *, block: bool = True) -> bool:
        """Send frames encoded elsewhere (the engine thread's replies, envelope included)."""
        try:
            self.socket.send_multipart(frames, flags=0 if block else zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True
