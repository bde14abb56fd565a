"""A real agent under a Type=notify-like supervisor: READY=1, then WATCHDOG=1 at half the period."""

from __future__ import annotations

import socket
import time

from fpmon.testing.raw import ONE_THREAD
from fpmon.testing.spawn import AgentProcess, write_config


def test_agent_sends_ready_then_watchdog(tmp_path):
    path = str(tmp_path / "notify.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    srv.bind(path)
    srv.settimeout(30)
    cfg = write_config(tmp_path, "notify-node", engine=ONE_THREAD)
    a = AgentProcess(cfg).start(env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "1000000"})
    try:
        got = [srv.recv(200).decode()]
        assert got[0].startswith("READY=1")
        t0 = time.monotonic()
        while sum(m == "WATCHDOG=1" for m in got) < 3:
            got.append(srv.recv(200).decode())
        # Three pings at 0.5 s spacing: within ~1-2 s, not one per main-loop turn.
        assert 0.7 < time.monotonic() - t0 < 5
    finally:
        assert a.stop() == 0
        srv.settimeout(5)
        assert "STOPPING=1" in srv.recv(200).decode()
        srv.close()
