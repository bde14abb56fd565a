"""Text for cells: numbers, ages and sparklines as short strings (no Textual here)."""

from __future__ import annotations

import time
from collections.abc import Iterable

BLOCKS = " ▁▂▃▄▅▆▇█"


def pct(x: float | None, scale: float = 100.0) -> str:
    return "—" if x is None else f"{x * scale:5.1f}%"


def num(x: float | None, fmt: str = "{:.1f}") -> str:
    return "—" if x is None else fmt.format(x)


def gib(used: float | None, total: float | None) -> str:
    if used is None:
        return "—"
    if total:
        return f"{used / 2**30:.1f}/{total / 2**30:.0f}G"
    return f"{used / 2**30:.1f}G"


def age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def clock(t: float) -> str:
    """A wall time with its date (month-day): an alert group can span days."""
    return time.strftime("%m-%d %H:%M:%S", time.localtime(t)) if t else "—"


def one_line(text: str) -> str:
    """Text for a one-line cell: line breaks and tabs (a verifier's exception text) as spaces."""
    return " ".join(text.split()) if any(c in text for c in "\n\r\t") else text


def printable(text: str) -> str:
    """Text from the wire for a terminal cell: control characters (an escape sequence in a
    process name) become `?`, line breaks spaces."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else " " if c in "\n\r\t" else "?" for c in text)


def spark(values: Iterable[float], width: int = 12, top: float | None = None) -> str:
    """A one-line sparkline of the last `width` values, scaled to `top` (or their max)."""
    vals = list(values)[-width:]
    if not vals:
        return " " * width
    hi = top if top is not None else max(vals)
    if hi <= 0:
        return ("▁" * len(vals)).rjust(width)
    n = len(BLOCKS) - 1
    s = "".join(BLOCKS[max(1, min(n, round(v / hi * n)))] if v > 0 else "▁" for v in vals)
    return s.rjust(width)


def jsonable(x: object) -> object:
    """`json.dumps(default=...)`: raw bytes (digests, chains) as hex, anything else as text."""
    if isinstance(x, bytes):
        return x.hex()
    return str(x)
