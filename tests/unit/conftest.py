"""Fixtures for the unit tests: a ZeroMQ context per test, and Session pairs over loopback."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq

from fpmon.session import Security, Session


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context[Any]]:
    """A context of its own, so a test's sockets and ZAP handler end with it."""
    ctx: zmq.Context[Any] = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def session_pair(
    zmq_ctx: zmq.Context[Any],
) -> Callable[..., tuple[Session, Session]]:
    """`make(server_kind, client_kind, server=..., client=..., **kw)`: a server Session bound
    on a free loopback port and a client Session connected to it; `kw` goes to both."""

    def make(
        server_kind: int,
        client_kind: int,
        *,
        server: Security = None,
        client: Security = None,
        **kw: Any,
    ) -> tuple[Session, Session]:
        srv = Session(zmq_ctx, server_kind, security=server, **kw)
        ep = srv.bind("tcp://127.0.0.1:0", "[test] server")
        cli = Session(zmq_ctx, client_kind, security=client, **kw)
        cli.connect(ep)
        return srv, cli

    return make
