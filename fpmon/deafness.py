"""Deafness: a SUB socket that hears nothing for too long is recreated, and the owner told.

libzmq drops a connection for good on a protocol error (an oversized frame against
ZMQ_MAXMSGSIZE, a malformed ZMTP frame): a connecting SUB never reconnects after one, and no
socket event says why. The publishers fpmon listens to are periodic (telemetry and heads about
once a second), so silence for `deaf_after_s` means the SUB or every publisher is gone; either
way the owner should say so, and a fresh socket (a fresh connection) is the only cure for the
first. Used by the replay daemon and the monitor's feed; it owns no poll loop of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

MAX_WAIT_S = 300.0  # silence alerts back off to one per this long while nothing is heard


class Closable(Protocol):
    def close(self, linger: int | None = ...) -> None: ...


Socket = TypeVar("Socket", bound=Closable)  # a zmq.Socket, or the Session owning one


class SubWatchdog(Generic[Socket]):
    """One SUB socket, made by `make`, remade when it has heard nothing for `deaf_after_s`.

    The owner calls `heard()` when the socket delivered anything and `check()` now and then.
    `replaced(old, new)` runs before the old socket is closed, so the owner can move its poller
    registration. `deaf_after_s <= 0` turns the watchdog off.
    """

    def __init__(
        self,
        make: Callable[[], Socket],
        deaf_after_s: float,
        replaced: Callable[[Socket, Socket], None] | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_wait_s: float = MAX_WAIT_S,
    ) -> None:
        self.make = make
        self.deaf_after_s = deaf_after_s
        self.replaced = replaced or (lambda old, new: None)
        self.clock = clock
        self.max_wait_s = max(max_wait_s, deaf_after_s)
        self.sock = make()
        self.last = clock()  # the socket's creation counts as heard: it gets the full grace
        self.wait_s = deaf_after_s
        self.recreated = 0

    def heard(self, now: float | None = None) -> None:
        self.last = self.clock() if now is None else now
        self.wait_s = self.deaf_after_s

    def silent_for(self, now: float | None = None) -> float:
        return (self.clock() if now is None else now) - self.last

    def check(self, now: float | None = None) -> float | None:
        """When deaf: recreate the socket and return how long it was silent; else None."""
        if self.deaf_after_s <= 0:
            return None
        now = self.clock() if now is None else now
        silent = now - self.last
        if silent < self.wait_s:
            return None
        old, self.sock = self.sock, self.make()
        self.replaced(old, self.sock)
        old.close(linger=0)
        self.recreated += 1
        self.last = now
        # Still silent after a new socket: every publisher may simply be down. Say it again,
        # but less and less often, until something is heard.
        self.wait_s = min(self.wait_s * 2, self.max_wait_s)
        return silent

    def close(self) -> None:
        self.sock.close(linger=0)
