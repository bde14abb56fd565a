"""A small Python client for an agent's intake (what `fpmon submit` uses)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import zmq

from fpmon.errors import FpmonError
from fpmon.session import CurveClient, Session
from fpmon.wire import SubmitReply, SubmitRequest


def curve_client_from_files(client_secret_file: str, server_public_file: str) -> CurveClient:
    """The Curve client role: our keypair (`.key_secret`), pinning the agent's public `.key`."""
    import zmq.auth

    pub, secret = zmq.auth.load_certificate(client_secret_file)
    if not secret:
        raise FpmonError(f"{client_secret_file}: no secret key in it; pass the .key_secret file")
    server, _ = zmq.auth.load_certificate(server_public_file)
    return CurveClient(server, pub, secret)


def submit(
    endpoint: str,
    prompt: str,
    max_tokens: int,
    timeout_s: float = 60.0,
    *,
    client: str = "client",
    request_id: str | None = None,
    curve: tuple[str, str] | None = None,
) -> SubmitReply:
    """Send one request and wait for its reply; `curve` = (client .key_secret, agent .key)."""
    ctx: zmq.Context[Any] = zmq.Context.instance()
    role = curve_client_from_files(*curve) if curve else None
    session = Session(ctx, zmq.DEALER, expect=(SubmitReply.TOPIC,), security=role)
    try:
        session.connect(endpoint)
        req = SubmitRequest(
            node=client,
            t=time.time(),
            request_id=request_id or uuid.uuid4().hex,
            prompt=prompt,
            max_tokens=max_tokens,
        )
        # A DEALER blocks on send while it has no live pipe (a refused Curve handshake tears
        # the pipe down until the next reconnect): bound the send as well as the reply.
        session.socket.sndtimeo = int(timeout_s * 1000)
        if not session.send(req):
            raise FpmonError(
                f"no reply from {endpoint} within {timeout_s:g} s: could not even send "
                "(is the agent running there, and is this client's key in its allowlist?)"
            )
        got = session.recv(int(timeout_s * 1000))
        if got is None:
            raise FpmonError(
                f"no reply from {endpoint} within {timeout_s:g} s: is the agent running there"
                + (" and is this client's key in its allowlist?" if curve else "?")
            )
        if got.error is not None:
            raise FpmonError(f"{endpoint} answered with a bad frame ({got.error})")
        assert isinstance(got.msg, SubmitReply)
        return got.msg
    finally:
        session.close()
