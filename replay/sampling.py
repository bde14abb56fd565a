"""Secret sampling: a keyed PRF over (node, seq) decides which records are opened.

A node cannot predict which of its records will be checked without the key, and the choice is
reproducible by anyone holding it (an auditor can re-derive the sample afterwards).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time

_SCALE = float(1 << 64)


class Sampler:
    def __init__(
        self, key: bytes, rate: float, suspect_rate: float, suspect_window_s: float = 600.0
    ) -> None:
        if len(key) < 16:
            raise ValueError("sampling key must be at least 16 bytes")
        self._key = key
        self.rate = rate
        self.suspect_rate = max(suspect_rate, rate)
        self.suspect_window_s = suspect_window_s
        self._suspect_until: dict[str, float] = {}

    def score(self, node: str, seq: int) -> float:
        """Uniform in [0, 1): HMAC-SHA256(key, node ‖ 0 ‖ seq) as a fraction."""
        mac = hmac.new(self._key, node.encode() + b"\x00" + struct.pack(">Q", seq), hashlib.sha256)
        return struct.unpack(">Q", mac.digest()[:8])[0] / _SCALE

    def suspect(self, node: str, now: float | None = None) -> None:
        """A finding against `node`: sample it at the higher rate for a while."""
        self._suspect_until[node] = (now or time.time()) + self.suspect_window_s

    def is_suspect(self, node: str, now: float | None = None) -> bool:
        until = self._suspect_until.get(node)
        return until is not None and (now or time.time()) < until

    def rate_for(self, node: str, now: float | None = None) -> float:
        return self.suspect_rate if self.is_suspect(node, now) else self.rate

    def sampled(self, node: str, seq: int, now: float | None = None) -> bool:
        rate = self.rate_for(node, now)
        return rate > 0 and self.score(node, seq) < rate
