"""sd_notify over a plain AF_UNIX datagram socket (no extra dependency).

Type=notify units get READY=1 once the agent serves, and WATCHDOG=1 at half WATCHDOG_USEC,
so systemd restarts an agent whose main loop hangs.
"""

from __future__ import annotations

import os
import socket
import time


class Notifier:
    def __init__(self) -> None:
        addr = os.environ.get("NOTIFY_SOCKET", "")
        self.addr = "\0" + addr[1:] if addr.startswith("@") else addr
        usec = os.environ.get("WATCHDOG_USEC", "")
        pid = os.environ.get("WATCHDOG_PID", "")
        self.interval = 0.0
        if usec.isdigit() and (not pid or pid == str(os.getpid())):
            self.interval = int(usec) / 1e6 / 2
        self._next = 0.0

    @property
    def enabled(self) -> bool:
        return bool(self.addr)

    def notify(self, state: str) -> bool:
        if not self.addr:
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
            try:
                s.sendto(state.encode(), self.addr)
            except OSError:
                return False
        return True

    def ready(self, status: str = "") -> None:
        self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def tick(self, now: float | None = None) -> None:
        """Call often from the main loop: pings the watchdog when due."""
        if not self.interval:
            return
        now = time.monotonic() if now is None else now
        if now >= self._next:
            self.notify("WATCHDOG=1")
            self._next = now + self.interval

    def stopping(self) -> None:
        self.notify("STOPPING=1")
