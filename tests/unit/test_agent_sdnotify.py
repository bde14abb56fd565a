"""sd_notify over a real AF_UNIX datagram socket, as systemd would receive it."""

from __future__ import annotations

import socket

from fpmon.agents.sdnotify import Notifier


def test_ready_and_watchdog_at_half_interval(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "4000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    n = Notifier()
    assert n.interval == 2.0
    n.ready("serving")
    assert srv.recv(100) == b"READY=1\nSTATUS=serving"
    n.tick(now=100.0)
    assert srv.recv(100) == b"WATCHDOG=1"
    n.tick(now=101.0)  # not due yet: half of 4 s
    n.tick(now=102.0)
    assert srv.recv(100) == b"WATCHDOG=1"
    srv.setblocking(False)
    try:
        extra = srv.recv(100)
    except BlockingIOError:
        extra = b""
    assert extra == b""
    srv.close()


def test_without_systemd_it_is_silent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    n = Notifier()
    assert not n.enabled and not n.notify("READY=1")
    n.tick()
