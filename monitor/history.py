"""A per-node series in one fixed block of doubles (sparklines, capacity windows)."""

from __future__ import annotations

from array import array
from collections.abc import Iterator


class History:
    """The last `size` points of a per-node series, in one block of doubles allocated when
    the node is first seen: 1,000 nodes x 2 series x 120 points take their memory at once
    instead of growing for the two minutes the series take to fill (one float object and
    one deque slot per point)."""

    __slots__ = ("_a", "_i", "_n")

    def __init__(self, size: int) -> None:
        self._a = array("d", bytes(8 * max(1, size)))
        self._i = 0  # where the next point goes
        self._n = 0  # points held

    def append(self, x: float) -> None:
        a = self._a
        a[self._i] = x
        self._i = (self._i + 1) % len(a)
        if self._n < len(a):
            self._n += 1

    def __len__(self) -> int:
        return self._n

    def __iter__(self) -> Iterator[float]:
        """Oldest first."""
        a, i, n = self._a, self._i, self._n
        return iter(a[:n] if n < len(a) else a[i:] + a[:i])

    def __getitem__(self, k: int) -> float:
        return list(self)[k]

    def __repr__(self) -> str:
        return f"History({list(self)})"
