"""The SUB watchdog on real sockets with a fake clock: grace, recreation, backoff, reset."""

from __future__ import annotations

import zmq

from fpmon.deafness import SubWatchdog


def test_silence_recreates_the_socket_and_backs_off_until_heard():
    ctx = zmq.Context()
    now = [100.0]
    swaps: list[tuple[zmq.Socket, zmq.Socket]] = []
    w = SubWatchdog(
        lambda: ctx.socket(zmq.SUB),
        10.0,
        lambda old, new: swaps.append((old, new)),
        clock=lambda: now[0],
        max_wait_s=30.0,
    )
    first = w.sock
    now[0] = 109.0
    assert w.check() is None  # within the grace a new socket gets
    now[0] = 111.0
    assert w.check() == 11.0
    assert swaps == [(first, w.sock)] and first.closed and not w.sock.closed
    now[0] = 121.0
    assert w.check() is None  # still silent: the next alert waits twice as long
    now[0] = 131.0
    assert w.check() == 20.0
    now[0] = 200.0
    assert w.check() == 69.0 and w.wait_s == 30.0  # backoff capped
    w.heard(now=200.0)
    now[0] = 210.0
    assert w.check() == 10.0 and w.recreated == 4  # heard: the short wait again
    off = SubWatchdog(lambda: ctx.socket(zmq.SUB), 0.0, clock=lambda: now[0])
    now[0] = 1e9
    assert off.check() is None
    for s in (w, off):
        s.close()
    ctx.term()
