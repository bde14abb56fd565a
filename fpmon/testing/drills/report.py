"""Summary tables for the drills: rich when installed, plain fixed-width text otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, TextIO


def _rich_console(out: TextIO) -> Any:
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=out, width=120, highlight=False)


def table(
    title: str,
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    out: TextIO | None = None,
) -> None:
    out = out or sys.stdout
    cells = [["" if c is None else str(c) for c in r] for r in rows]
    console = _rich_console(out)
    if console is not None:
        from rich.table import Table

        console.print(f"[bold]{_escape(title)}[/]")
        t = Table()
        for i, c in enumerate(columns):
            t.add_column(c, justify="left" if i == 0 else "right", overflow="fold")
        for r in cells:
            t.add_row(*[_markup(x) for x in r])
        console.print(t)
        return
    widths = [
        max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)
    ]
    print(title, file=out)
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(x.ljust(w) for x, w in zip(r, widths, strict=True)), file=out)
    print(file=out)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _markup(text: str) -> str:
    from rich.markup import escape

    t = escape(text)
    if text.startswith("FAIL"):
        return f"[bold red]{t}[/]"
    if text.startswith("ok"):
        return f"[green]{t}[/]"
    return t


def lines(title: str, items: Sequence[str], out: TextIO | None = None, limit: int = 40) -> None:
    out = out or sys.stdout
    print(title, file=out)
    for s in items[:limit]:
        print(f"  - {s}", file=out)
    if len(items) > limit:
        print(f"  ... and {len(items) - limit} more", file=out)
    print(file=out)


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank, None when empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def mib(v: float) -> str:
    return f"{v / (1 << 20):.1f} MiB"
