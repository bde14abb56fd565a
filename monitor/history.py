"""Per-node buffers taken whole when the node is first seen: a series in one fixed block of
doubles (sparklines, capacity windows) and a fixed ring of objects (recent verdicts, rate
window)."""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import Any


class Ring:
    """The last `maxlen` objects, oldest first, in one list of that length allocated up front:
    the deque-like part of `collections.deque(maxlen=n)` that the model uses (`append` drops
    the oldest when full, `len`, `iter`, `[0]`/`[-1]`, `maxlen`).

    Kept instead of deque because a deque grows while it is in use: it stores items in
    64-slot blocks and, once appends cross a block's end (after ~33 of them), takes a second
    block and keeps the freed one for reuse, so each node's deque doubles in size a minute
    or so after the node appears. No library offers a fixed-size ring of Python objects
    (numpy's are of numbers), and this one is a dozen lines."""

    __slots__ = ("_a", "_i", "_n")

    def __init__(self, maxlen: int) -> None:
        self._a: list[Any] = [None] * max(1, maxlen)
        self._i = 0  # where the next item goes
        self._n = 0  # items held

    @property
    def maxlen(self) -> int:
        return len(self._a)

    def append(self, x: Any) -> None:
        a = self._a
        a[self._i] = x
        self._i = (self._i + 1) % len(a)
        if self._n < len(a):
            self._n += 1

    def __len__(self) -> int:
        return self._n

    def __bool__(self) -> bool:
        return self._n > 0

    def __iter__(self) -> Iterator[Any]:
        """Oldest first."""
        a, i, n = self._a, self._i, self._n
        return iter(a[:n] if n < len(a) else a[i:] + a[:i])

    def __getitem__(self, k: int) -> Any:
        n = self._n
        if not -n <= k < n:
            raise IndexError("ring index out of range")
        return self._a[(self._i - n + (k % n)) % len(self._a)]

    def __repr__(self) -> str:
        return f"Ring({list(self)}, maxlen={len(self._a)})"


class History(Ring):
    """The last `size` points of a per-node series, in one block of doubles allocated when
    the node is first seen: 1,000 nodes x 2 series x 120 points take their memory at once
    instead of growing for the two minutes the series take to fill (one float object and
    one deque slot per point)."""

    __slots__ = ()

    def __init__(self, size: int) -> None:
        self._a = array("d", bytes(8 * max(1, size)))  # type: ignore[assignment]
        self._i = 0
        self._n = 0

    def __repr__(self) -> str:
        return f"History({list(self)})"
