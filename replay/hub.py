"""`fpmon hub`: ZeroMQ's own XSUB/XPUB forwarder (`zmq.proxy`) for fleets too big to mesh.

Publishers (agents, the replay daemon) connect their PUB to the hub's XSUB; subscribers (the
replay daemon, monitors) connect their SUB to its XPUB; subscriptions flow upstream. With Curve
on, the hub is the Curve server on both sides and admits only allowlisted keys.

Attribution through the hub: the hub forwards messages, not who sent them, so a subscriber
cannot see which Curve key published a frame. Commitments stay bound to their node anyway:
each node's heads are signed with its pinned Ed25519 key over (node, seq, chain), and the
daemon checks every commit's link and every head against that chain. A publisher that forges
commits under another node's name cannot sign a head for them: the forgery shows as a
chain break of that node, not as accepted work. Allowlisting publishers' Curve keys at the hub
keeps strangers from publishing at all.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq

from fpmon.errors import FpmonError
from fpmon.wire import Limits
from replay.config import read_toml

log = logging.getLogger("fpmon.hub")

# Subscribers (the daemon, monitors) set ZMQ_MAXMSGSIZE to the wire limit plus this much, and
# drop the whole connection on a bigger frame, never to reconnect. The hub must refuse such a
# frame first, at the publisher's connection: its limit is never above theirs.
FRAME_SLACK = 4096
MAX_MESSAGE_BYTES = Limits().max_bytes + FRAME_SLACK


@dataclass(frozen=True)
class HubConfig:
    xsub: str = "tcp://127.0.0.1:7900"
    xpub: str = "tcp://127.0.0.1:7901"
    curve_secret_file: Path | None = None  # the hub's zmq.auth certificate (.key_secret)
    publishers_dir: Path | None = None  # allowlisted Curve public keys of publishers
    subscribers_dir: Path | None = None  # allowlisted Curve public keys of subscribers
    max_message_bytes: int = MAX_MESSAGE_BYTES  # ZMQ_MAXMSGSIZE of both sockets


def load_config(path: str | Path) -> HubConfig:
    p, doc = read_toml(path, "deploy/hub.example.toml")
    h, c = doc.get("hub", {}), doc.get("curve", {})

    def opt(key: str) -> Path | None:
        return p.parent / str(c[key]) if c.get(key) else None

    cfg = HubConfig(
        xsub=str(h.get("xsub", HubConfig.xsub)),
        xpub=str(h.get("xpub", HubConfig.xpub)),
        curve_secret_file=opt("secret_file"),
        publishers_dir=opt("publishers_dir"),
        subscribers_dir=opt("subscribers_dir"),
        max_message_bytes=int(h.get("max_message_bytes", MAX_MESSAGE_BYTES)),
    )
    if cfg.curve_secret_file and not (cfg.publishers_dir and cfg.subscribers_dir):
        raise FpmonError(f"{p}: [curve] needs publishers_dir and subscribers_dir allowlists")
    return cfg


def _bindable(ep: str) -> str:
    return ep[:-2] + ":*" if ep.endswith(":0") else ep


class Hub:
    def __init__(self, cfg: HubConfig, ctx: zmq.Context[Any] | None = None) -> None:
        self.cfg = cfg
        self.ctx = ctx or zmq.Context()
        self.auth: Any = None
        self.xsub = self.ctx.socket(zmq.XSUB)
        self.xpub = self.ctx.socket(zmq.XPUB)
        for s in (self.xsub, self.xpub):
            s.linger = 0
            s.maxmsgsize = cfg.max_message_bytes
        if cfg.curve_secret_file:
            self._curve()
        self.xsub.bind(_bindable(cfg.xsub))
        self.xpub.bind(_bindable(cfg.xpub))
        self.endpoints = {
            "xsub": self.xsub.last_endpoint.decode(),
            "xpub": self.xpub.last_endpoint.decode(),
        }
        self._ctl_addr = f"inproc://fpmon-hub-{id(self)}"
        self._ctl = self.ctx.socket(zmq.PAIR)
        self._ctl.bind(self._ctl_addr)
        self._thread: threading.Thread | None = None

    def _curve(self) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        if not zmq.has("curve"):
            raise FpmonError("Curve asked for, but this libzmq has no CURVE support")
        public, secret = zmq.auth.load_certificate(str(self.cfg.curve_secret_file))
        if secret is None:
            raise FpmonError(f"{self.cfg.curve_secret_file}: no secret key in this certificate")
        self.auth = ThreadAuthenticator(self.ctx)
        self.auth.start()
        for domain, folder, sock in (
            ("publishers", self.cfg.publishers_dir, self.xsub),
            ("subscribers", self.cfg.subscribers_dir, self.xpub),
        ):
            assert folder is not None
            # zmq.auth only logs when a key folder fails to load: check it ourselves.
            keys = list(folder.glob("*.key")) if folder.is_dir() else []
            if not keys:
                raise FpmonError(f"{folder}: no Curve public keys (*.key) to allow as {domain}")
            self.auth.configure_curve(domain=domain, location=str(folder))
            sock.zap_domain = domain.encode()
            sock.curve_server = True
            sock.curve_publickey, sock.curve_secretkey = public, secret

    def _run(self) -> None:
        ctl = self.ctx.socket(zmq.PAIR)
        ctl.connect(self._ctl_addr)
        try:
            zmq.proxy_steerable(self.xsub, self.xpub, None, ctl)
        except zmq.ContextTerminated:
            pass
        finally:
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
