"""`fpmon hub`: the XSUB/XPUB forwarder for fleets too big to mesh, with who-may-say-what.

Publishers (agents, the replay daemon) connect their PUB to the hub's XSUB; subscribers (the
replay daemon, monitors) connect their SUB to its XPUB; subscriptions flow upstream unchanged.

With Curve on, the hub is the Curve server on both sides, admits only allowlisted keys (ZAP),
and binds identity: a subscriber cannot see which key published a frame, so the hub checks it
for them. Every publisher key is a file `<name>.key` in `publishers_dir`; its file name is the
node name that key speaks for. A message is forwarded only when
- its topic is `commit`, `head` or `telemetry`, the key is a node's, and the payload's `node`
  is that node's name; or
- its topic is `verdict` or `alert` and the key is one of `[curve] verifiers` (file names).
Everything else (another node's name, a node posing as the verifier or the reverse, a payload
without a readable `node`, other topics, not two frames) is dropped and counted by reason
(`Hub.stats()`, logged every `log_every_s`). Heads stay signed with each node's pinned Ed25519
key and verdicts with the verifier's: the hub's check stops impersonation at the door, the
signatures still bind what a subscriber accepts.

Without Curve (loopback demos) there is no key to bind: the hub forwards those five topics
from anyone who connects, and says so when it starts.

Frames over `max_message_bytes` cost their publisher its connection here (ZMQ_MAXMSGSIZE),
never reaching subscribers, whose own limit would drop *their* connection for good.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

import msgspec
import zmq

from fpmon import config
from fpmon.config import Positive, PositiveFloat, SecretPath, Section
from fpmon.errors import FpmonError
from fpmon.transport import bind, curve_server
from fpmon.wire import Limits

log = logging.getLogger("fpmon.hub")

# Subscribers (the daemon, monitors) set ZMQ_MAXMSGSIZE to the wire limit plus this much, and
# drop the whole connection on a bigger frame, never to reconnect. The hub must refuse such a
# frame first, at the publisher's connection: its limit is never above theirs.
FRAME_SLACK = 4096
MAX_MESSAGE_BYTES = Limits().max_bytes + FRAME_SLACK
NODE_TOPICS = frozenset({b"commit", b"head", b"telemetry"})
VERIFIER_TOPICS = frozenset({b"verdict", b"alert"})
BATCH = 2000  # messages moved per wake-up before looking at the other socket again


class ForwarderConfig(Section):
    """`[hub]`: the two sockets."""

    xsub: str = "tcp://127.0.0.1:7900"
    xpub: str = "tcp://127.0.0.1:7901"
    max_message_bytes: Positive = MAX_MESSAGE_BYTES  # ZMQ_MAXMSGSIZE of both sockets
    log_every_s: PositiveFloat = 60.0  # drop counts to the log this often (when they changed)


class HubCurveConfig(Section):
    """`[curve]`: present, the hub is the Curve server on both sockets (all keys required)."""

    secret_file: SecretPath  # the hub's zmq.auth certificate (.key_secret)
    publishers_dir: Path  # allowlist; `<node name>.key` per node key
    subscribers_dir: Path  # allowlisted Curve public keys of subscribers
    verifiers: tuple[str, ...] = ("replay",)  # names in publishers_dir allowed verdict/alert


class HubConfig(Section):
    hub: ForwarderConfig = msgspec.field(default_factory=ForwarderConfig)
    curve: HubCurveConfig | None = None


def load_config(path: str | Path) -> HubConfig:
    return config.load(path, HubConfig, example="deploy/hub.example.toml")


class Drop(Exception):
    """A message the hub does not forward; `reason` is the counter's label."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _map_len(p: memoryview) -> int:
    """Entries a msgpack map header announces (-1: not a map header)."""
    b = p[0]
    if 0x80 <= b <= 0x8F:
        return b & 0x0F
    if b == 0xDE:
        return int.from_bytes(p[1:3], "big")
    if b == 0xDF:
        return int.from_bytes(p[1:5], "big")
    return -1


# Top-level entries as raw undecoded values: the hub reads one field, subscribers the rest.
_TOP_LEVEL = msgspec.msgpack.Decoder(dict[str, msgspec.Raw])
_STR = msgspec.msgpack.Decoder(str)


def read_node(payload: memoryview) -> str:
    """The payload's top-level `node`, or `Drop`. Values other than `node` are skipped in C
    (msgspec, ~1 µs for a commit; msgpack.unpackb of the whole map took 3).

    A map with a key twice is refused (canonical maps never have one): decoders differ on which
    value wins, and the hub must read the same name every subscriber will. The frame's size is
    bounded by ZMQ_MAXMSGSIZE; msgspec refuses truncated lengths and deep nesting by itself.
    """
    if not payload:
        raise Drop("malformed")
    try:
        m = _TOP_LEVEL.decode(payload)
    except Exception:  # not a map of string keys, truncated, too deep: hostile bytes
        raise Drop("malformed") from None
    if len(m) != _map_len(payload):
        raise Drop("duplicate_key")
    raw = m.get("node")
    if raw is None:
        raise Drop("schema")
    try:
        return _STR.decode(raw)
    except msgspec.ValidationError:
        raise Drop("schema") from None


class Acl:
    """Curve public key (Z85, as ZAP reports it in `User-Id`) -> what it may publish."""

    def __init__(self, nodes: dict[str, str], verifiers: set[str]) -> None:
        self.nodes = nodes  # key -> node name
        self.verifiers = verifiers  # keys

    @classmethod
    def from_dir(cls, folder: Path, verifier_names: tuple[str, ...]) -> Acl:
        import zmq.auth

        named: dict[str, str] = {}
        for path in sorted(folder.glob("*.key")):
            public, _ = zmq.auth.load_certificate(str(path))
            key = public.decode()
            if key in named:
                raise FpmonError(
                    f"{folder}: {path.name} and {named[key]}.key hold the same Curve key; "
                    "a key may speak for one name only"
                )
            named[key] = path.stem
        missing = set(verifier_names) - set(named.values())
        if missing:
            raise FpmonError(
                f"{folder}: no key file for verifier(s) {', '.join(sorted(missing))} "
                "([curve] verifiers names <name>.key files there)"
            )
        verifiers = {k for k, n in named.items() if n in verifier_names}
        nodes = {k: n for k, n in named.items() if k not in verifiers}
        return cls(nodes, verifiers)

    def admit(self, topic: bytes, payload: zmq.Frame, user_id: str) -> str | None:
        """None to forward, else why not."""
        if topic in NODE_TOPICS:
            owner = self.nodes.get(user_id)
            if owner is None:
                return "not_a_node"
            try:
                node = read_node(payload.buffer)
            except Drop as d:
                return d.reason
            return None if node == owner else "wrong_node"
        if topic in VERIFIER_TOPICS:
            return None if user_id in self.verifiers else "not_verifier"
        return "unknown_topic"


def _any_publisher(topic: bytes, payload: zmq.Frame, user_id: str) -> str | None:
    """Without Curve: the topic is all there is to check."""
    return None if topic in NODE_TOPICS or topic in VERIFIER_TOPICS else "unknown_topic"


class Hub:
    def __init__(self, cfg: HubConfig, ctx: zmq.Context[Any] | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or zmq.Context()
        self.auth: Any = None
        self.acl: Acl | None = None
        self.forwarded = 0
        self.dropped: Counter[str] = Counter()
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for s in (self.xsub, self.xpub):
            s.linger = 0
            s.maxmsgsize = cfg.hub.max_message_bytes
        if cfg.curve is not None:
            self._curve(cfg.curve)
        else:
            log.warning(
                "hub without Curve: it cannot tell who published a frame, so it forwards "
                "commit/head/telemetry/verdict/alert from anyone who connects (loopback only)"
            )
        self.endpoints = {
            "xsub": bind(self.xsub, cfg.hub.xsub, "[hub] xsub"),
            "xpub": bind(self.xpub, cfg.hub.xpub, "[hub] xpub"),
        }
        self._ctl_addr = f"inproc://fpmon-hub-{id(self)}"
        self._ctl = self.ctx.socket(zmq.PAIR)
        self._ctl.bind(self._ctl_addr)
        self._thread: threading.Thread | None = None

    def _curve(self, c: HubCurveConfig) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        if not zmq.has("curve"):
            raise FpmonError("Curve asked for, but this libzmq has no CURVE support")
        config.check_private(c.secret_file, "Curve secret key")
        public, secret = zmq.auth.load_certificate(str(c.secret_file))
        if secret is None:
            raise FpmonError(f"{c.secret_file}: no secret key in this certificate")
        for folder in (c.publishers_dir, c.subscribers_dir):
            # zmq.auth only logs when a key folder fails to load: check it ourselves.
            if not (folder.is_dir() and any(folder.glob("*.key"))):
                raise FpmonError(f"{folder}: no Curve public keys (*.key) to allow")
        self.acl = Acl.from_dir(c.publishers_dir, c.verifiers)
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        for domain, folder, sock in (
            ("publishers", c.publishers_dir, self.xsub),
            ("subscribers", c.subscribers_dir, self.xpub),
        ):
            self.auth.configure_curve(domain=domain, location=str(folder))
            curve_server(sock, public, secret, domain)
        log.info(
            "hub binds %d node key(s) to their names; %d verifier key(s)",
            len(self.acl.nodes),
            len(self.acl.verifiers),
        )

    # --- forwarding -----------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Forwarded and dropped-by-reason counts so far (read from any thread)."""
        return {"forwarded": self.forwarded, "dropped": dict(self.dropped)}

    def _discard_rest(self, sock: zmq.Socket[Any]) -> None:
        while sock.rcvmore:
            sock.recv(copy=False)

    def _forward(self) -> None:
        """Publishers -> subscribers: up to BATCH messages, each checked against the ACL."""
        recv, send, dropped = self.xsub.recv, self.xpub.send, self.dropped
        admit = self.acl.admit if self.acl is not None else _any_publisher
        curve = self.acl is not None
        forwarded = 0
        try:
            for _ in range(BATCH):
                try:
                    topic = recv(zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    return
                if not topic.more:
                    dropped["frame_count"] += 1
                    continue
                payload = recv(copy=False)  # the parts of a message arrive together
                if payload.more:
                    self._discard_rest(self.xsub)
                    dropped["frame_count"] += 1
                    continue
                # ZAP's User-Id: the Z85 Curve key that sent this message (Curve only).
                # pyzmq types Frame.get as int | str: a named property is a str.
                user = cast(str, topic.get("User-Id")) if curve else ""
                reason = admit(topic.bytes, payload, user)
                if reason is not None:
                    dropped[reason] += 1
                    continue
                send(topic, zmq.SNDMORE, copy=False)
                send(payload, copy=False)
                forwarded += 1
        finally:
            self.forwarded += forwarded

    def _subscriptions(self) -> None:
        """Subscribers -> publishers: (un)subscribe messages only, as zmq.proxy would."""
        for _ in range(BATCH):
            try:
                msg = self.xpub.recv(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            if msg.more:
                self._discard_rest(self.xpub)
                self.dropped["upstream"] += 1
                continue
            b = msg.buffer
            if not b or b[0] not in (0, 1):
                self.dropped["upstream"] += 1
                continue
            self.xsub.send(msg, copy=False)

    def _log_counts(self, last: dict[str, Any], final: bool = False) -> dict[str, Any]:
        """Totals on the log when drops changed since `last` (and once at the end)."""
        now = self.stats()
        if final or now["dropped"] != last.get("dropped", {}):
            log.info("hub: forwarded %d, dropped %s", now["forwarded"], now["dropped"])
        return now

    def _run(self) -> None:
        ctl = self.ctx.socket(zmq.PAIR)
        ctl.connect(self._ctl_addr)
        poller = zmq.Poller()
        for s in (self.xsub, self.xpub, ctl):
            poller.register(s, zmq.POLLIN)
        logged: dict[str, Any] = {}
        next_log = time.monotonic() + self.cfg.hub.log_every_s
        try:
            while True:
                events = dict(poller.poll(1000))
                if ctl in events:
                    return
                if self.xpub in events:
                    self._subscriptions()
                if self.xsub in events:
                    self._forward()
                if time.monotonic() >= next_log:
                    logged = self._log_counts(logged)
                    next_log = time.monotonic() + self.cfg.hub.log_every_s
        except zmq.ContextTerminated:
            pass
        finally:
            self._log_counts(logged, final=True)
            ctl.close(linger=0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="fpmon-hub", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._ctl.send(b"TERMINATE")
            self._thread.join(timeout=5)
            self._thread = None
        for s in (self._ctl, self.xsub, self.xpub):
            s.close(linger=0)
        if self.auth is not None:
            self.auth.stop()
        self.ctx.term()
