"""A loop on a daemon thread, started and stopped as a context manager."""

from __future__ import annotations

import threading


class BackgroundLoop:
    """Subclasses implement `_loop` (checking `self._stop`) and may extend enter/exit."""

    thread_name = "fpmon-lab-loop"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
