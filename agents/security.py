"""CurveZMQ on the agent's sockets: one ZAP authenticator, one allowlist per socket role.

Each server socket gets its own ZAP domain (`intake`, `openings`, `publish`), so a key allowed
to submit work cannot open records: openings are only for allowlisted verifier keys.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from fpmon.agents.config import SecurityConfig
from fpmon.agents.keys import load_allowlist, load_curve_server
from fpmon.errors import FpmonError
from fpmon.session import CurveServer
from fpmon.transport import curve_client, curve_server

log = logging.getLogger("fpmon.agent.security")


class _Allow:
    """A credentials provider that counts denials (zmq.auth itself only logs at debug)."""

    def __init__(self, keys: set[bytes], domain: str, denied: Counter[str], lock: Any) -> None:
        self.keys, self.domain, self.denied, self.lock = keys, domain, denied, lock

    def callback(self, domain: str, key: bytes) -> bool:
        ok = key in self.keys
        if not ok:
            with self.lock:
                self.denied[f"{self.domain}:unauthenticated"] += 1
            log.warning(
                "rejected unauthenticated peer",
                extra={
                    "fields": {"domain": self.domain, "client_key": key.decode(errors="replace")}
                },
            )
        return ok


class _AnyKey:
    def callback(self, domain: str, key: bytes) -> bool:
        return True


class Security:
    def __init__(self, ctx: zmq.Context[Any], cfg: SecurityConfig) -> None:
        self.cfg = cfg
        self.on = cfg.curve
        self.denied: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.auth: ThreadAuthenticator | None = None
        if not self.on:
            return
        if not zmq.has("curve"):
            raise FpmonError(
                "curve is on but this libzmq lacks CURVE: install pyzmq with libsodium"
            )
        if cfg.keys_dir is None:
            raise FpmonError(
                "[security] curve = true needs keys_dir (run `fpmon keygen --out DIR`)"
            )
        self.public, self.secret = load_curve_server(cfg.keys_dir)
        allow = {
            "intake": load_allowlist(cfg.clients_dir, "clients_dir (submitters)"),
            "openings": load_allowlist(cfg.verifiers_dir, "verifiers_dir (verifiers)"),
        }
        if cfg.subscribers_dir:
            allow["publish"] = load_allowlist(cfg.subscribers_dir, "subscribers_dir")
        self.auth = ThreadAuthenticator(ctx, log=logging.getLogger("fpmon.agent.zap"))
        self.auth.start()
        for domain, keys in allow.items():
            self.auth.configure_curve_callback(
                domain, _Allow(keys, domain, self.denied, self._lock)
            )
        self.allow_counts = {d: len(k) for d, k in allow.items()}

    def role(self, domain: str) -> CurveServer | None:
        """The Curve server role checked against `domain`'s allowlist; None with curve off."""
        if not self.on:
            return None
        if domain == "publish" and "publish" not in self.allow_counts:
            # Without a subscriber allowlist the PUB still encrypts; any Curve client may listen.
            # Not CURVE_ALLOW_ANY: zmq.auth applies that to *every* domain, opening intake too.
            assert self.auth is not None  # curve on: __init__ started it
            self.auth.configure_curve_callback("publish", _AnyKey())
        return CurveServer(self.public, self.secret, domain)

    def server(self, sock: zmq.Socket[Any], domain: str) -> None:
        """Make `sock` (the PUB, which no Session owns) a Curve server for `domain`."""
        role = self.role(domain)
        if role is not None:
            curve_server(sock, role.public, role.secret, role.domain)

    def client_of(self, sock: zmq.Socket[Any], server_public_file: Path | None) -> None:
        """Make `sock` a Curve client of a server (the hub) whose public key file is given."""
        if not self.on:
            return
        if not server_public_file:
            raise FpmonError("a hub with curve on needs [security] hub_public_key (its .key file)")
        server_pub, _ = zmq.auth.load_certificate(str(server_public_file))
        curve_client(sock, server_pub, self.public, self.secret)

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.denied)

    def stop(self) -> None:
        if self.auth is not None:
            self.auth.stop()
            self.auth = None


def hard_cap(max_msg_bytes: int) -> int:
    """The ZMQ_MAXMSGSIZE for an untrusted peer: libzmq drops one that sends more than this
    before we ever see it.

    The hard cap sits above the wire limit so that merely oversized frames still reach the
    decoder and are counted as `oversized`; grossly oversized ones cost the peer its connection.
    """
    return 4 * max_msg_bytes + 4096
