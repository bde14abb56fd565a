"""When the verifier challenges a node, and with what: a keyed PRF the node cannot predict.

Challenge k of node n is sent `sum(interval(n, j) for j <= k)` seconds after the daemon's
start, with exponential intervals of the configured mean (a Poisson process: memoryless, so the
time since the last challenge says nothing about the next). Every draw is
`HMAC-SHA256(K, what ‖ 0 ‖ node ‖ 0 ‖ epoch ‖ k)` as a fraction in [0, 1), with
K = HMAC-SHA256(sampling key, "fpmon challenges v1") (domain-separated from the sampling PRF,
replay/sampling.py) and `epoch` the daemon's start time (unix seconds, logged at start and in
every challenge's evidence): an auditor holding the key re-derives every time and prompt, and a
restart does not repeat the previous run's offsets. A node without the key sees only a Poisson
process of ordinary-looking requests.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import struct
from collections.abc import Sequence

_SCALE = float(1 << 64)
_DOMAIN = b"fpmon challenges v1"

# Seeded random text when no prompt pool is configured: plain words, 4 to 24 of them. Text
# like this is easier to tell from real traffic than a pool sampled from the fleet's own
# clients (`[challenges] prompts` / `prompt_file`); docs/REPLAY.md says so.
_TEXT = (
    "the of and to in a is that for it as was with be by on not he this are or his from at "
    "which but have an they you were her she there been one all we their has would when if "
    "so no will what can more about up out into them time only new some could these two may "
    "first then do any like my now over such our man me even most made after also did many "
    "before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get "
    "here between both life being under never day same another know while last might us "
    "great old year off come since against go came right used take three report model data "
    "system request answer price market policy energy water city river season summary list "
    "explain describe translate write short story letter code function table history"
)
WORDS: tuple[str, ...] = tuple(_TEXT.split())


class ChallengeSchedule:
    def __init__(self, key: bytes, mean_interval_s: float, epoch: int) -> None:
        if len(key) < 16:
            raise ValueError("challenge key must be at least 16 bytes")
        if not mean_interval_s > 0:
            raise ValueError("mean_interval_s must be > 0")
        self._key = hmac.new(key, _DOMAIN, hashlib.sha256).digest()
        self.mean_interval_s = mean_interval_s
        self.epoch = epoch

    def uniform(self, what: str, node: str, k: int) -> float:
        """Draw `what` for challenge k of `node`: uniform in [0, 1)."""
        msg = b"\x00".join((what.encode(), node.encode(), struct.pack(">QQ", self.epoch, k)))
        mac = hmac.new(self._key, msg, hashlib.sha256).digest()
        return struct.unpack(">Q", mac[:8])[0] / _SCALE

    def interval(self, node: str, k: int) -> float:
        """Seconds from challenge k-1 (or the start, for k = 0) to challenge k."""
        return -self.mean_interval_s * math.log1p(-self.uniform("time", node, k))

    def offsets(self, node: str, count: int) -> list[float]:
        """The first `count` send times of `node`, in seconds after the start."""
        out, t = [], 0.0
        for k in range(count):
            t += self.interval(node, k)
            out.append(t)
        return out

    def pick(self, what: str, node: str, k: int, n: int) -> int:
        """An index in [0, n) for challenge k (a prompt of the pool, a token budget)."""
        return min(int(self.uniform(what, node, k) * n), n - 1)

    def prompt(self, node: str, k: int, pool: Sequence[str]) -> str:
        """The prompt of challenge k: from the pool, else seeded random words."""
        if pool:
            return pool[self.pick("prompt", node, k, len(pool))]
        n = 4 + self.pick("length", node, k, 21)
        return " ".join(WORDS[self.pick(f"word{i}", node, k, len(WORDS))] for i in range(n))

    def max_tokens(self, node: str, k: int, choices: Sequence[int]) -> int:
        return choices[self.pick("tokens", node, k, len(choices))]
