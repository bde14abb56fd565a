"""Progress for long work: a bar on a terminal, silence when output is not a terminal."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, stream: TextIO | None = None, enabled: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._last = 0.0
        self._open = False

    def update(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if done < total and now - self._last < 0.1:
            return
        self._last = now
        width = 28
        fill = int(width * done / max(total, 1))
        self.stream.write(f"\r{what:<22} [{'#' * fill}{'.' * (width - fill)}] {done}/{total}")
        self.stream.flush()
        self._open = True
        if done >= total:
            self.done()

    def note(self, text: str) -> None:
        if self.enabled:
            self.done()
            self.stream.write(text + "\n")
            self.stream.flush()

    def done(self) -> None:
        if self._open:
            self.stream.write("\n")
            self.stream.flush()
            self._open = False
