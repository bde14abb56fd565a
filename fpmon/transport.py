"""ZeroMQ plumbing every component shares: ROUTER envelopes, binding, Curve roles, limits.

One place for what was written three or four times over (the agent's ROUTERs, the daemon's
state ROUTER, the hub, the openings DEALERs, the dashboard's feed), so a fix to framing or
security lands everywhere at once. Message encoding and bounds live in `fpmon.wire`.
"""

from __future__ import annotations

from typing import Any

import zmq

from fpmon.errors import FpmonError
from fpmon.wire.codec import FRAME_SLACK, Limits


def split_envelope(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """ROUTER frames -> (envelope, body). REQ peers add an empty delimiter; DEALERs do not."""
    if len(frames) >= 2 and frames[1] == b"":
        return frames[:2], frames[2:]
    return frames[:1], frames[1:]


def bindable(endpoint: str) -> str:
    """`tcp://host:0` (any free port, as configs write it) in libzmq's spelling, `:*`."""
    return endpoint[:-2] + ":*" if endpoint.endswith(":0") else endpoint


def bind(sock: zmq.Socket[Any], endpoint: str, what: str) -> str:
    """Bind, or one clear error naming the socket and the config key; the bound endpoint."""
    try:
        sock.bind(bindable(endpoint))
    except zmq.ZMQError as e:
        raise FpmonError(
            f"cannot bind the {what} socket to {endpoint} ({e}): is another process using "
            f"it? change {what} in the config"
        ) from None
    ep = sock.last_endpoint  # a bytes option; pyzmq types every option as str | bytes | int
    return ep.decode() if isinstance(ep, bytes) else str(ep)


def limit(sock: zmq.Socket[Any], limits: Limits, linger: int = 0) -> None:
    """Untrusted peers: libzmq drops a frame over the wire limit before it is read."""
    sock.linger = linger
    sock.maxmsgsize = limits.max_bytes + FRAME_SLACK


def curve_client(
    sock: zmq.Socket[Any], server_key: bytes | str, public: bytes, secret: bytes
) -> None:
    """Make `sock` a Curve client pinning `server_key` (Z85): whatever it receives was sent
    by the holder of that key."""
    sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key
    sock.curve_publickey = public
    sock.curve_secretkey = secret


def curve_server(sock: zmq.Socket[Any], public: bytes, secret: bytes, domain: str) -> None:
    """Make `sock` a Curve server whose ZAP `domain` decides which client keys get in."""
    sock.zap_domain = domain.encode()
    sock.curve_server = True
    sock.curve_publickey = public
    sock.curve_secretkey = secret
