"""A small Python client for an agent's intake (what `fpmon submit` uses)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import zmq

from fpmon.errors import FpmonError
from fpmon.transport import curve_client
from fpmon.wire import SubmitReply, SubmitRequest, WireError, decode, encode


def curve_client_from_files(
    sock: zmq.Socket[Any], client_secret_file: str, server_public_file: str
) -> None:
    """Make `sock` a Curve client: our keypair (`.key_secret`), the agent's public `.key`."""
    import zmq.auth

    pub, secret = zmq.auth.load_certificate(client_secret_file)
    if not secret:
        raise FpmonError(f"{client_secret_file}: no secret key in it; pass the .key_secret file")
    server, _ = zmq.auth.load_certificate(server_public_file)
    curve_client(sock, server, pub, secret)


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
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        if curve:
            curve_client_from_files(sock, *curve)
        sock.connect(endpoint)
        req = SubmitRequest(
            node=client,
            t=time.time(),
            request_id=request_id or uuid.uuid4().hex,
            prompt=prompt,
            max_tokens=max_tokens,
        )
        # A DEALER blocks on send while it has no live pipe (a refused Curve handshake tears
        # the pipe down until the next reconnect): bound the send as well as the reply.
        sock.sndtimeo = int(timeout_s * 1000)
        try:
            sock.send_multipart(encode(req))
        except zmq.Again:
            raise FpmonError(
                f"no reply from {endpoint} within {timeout_s:g} s: could not even send "
                "(is the agent running there, and is this client's key in its allowlist?)"
            ) from None
        if not sock.poll(int(timeout_s * 1000)):
            raise FpmonError(
                f"no reply from {endpoint} within {timeout_s:g} s: is the agent running there"
                + (" and is this client's key in its allowlist?" if curve else "?")
            )
        try:
            reply = decode(sock.recv_multipart(), expect=(SubmitReply.TOPIC,))
        except WireError as e:
            raise FpmonError(f"{endpoint} answered with a bad frame ({e})") from None
        assert isinstance(reply, SubmitReply)
        return reply
    finally:
        sock.close()
