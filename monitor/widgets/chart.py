"""A bar chart on a fixed scale, 0 at the bottom and `top` at the top, newest bar right.

Textual's Sparkline scales from the data's minimum to its maximum: a mismatch rate steady at
100% (every verdict of a cheat) has min == max and is drawn as a flat line at the bottom,
which reads as 0%. Rates and utilisation have a natural scale; this chart keeps it and says
it (the top and bottom values on the left, the latest value in the title).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from rich.console import Console, ConsoleOptions, RenderResult
from rich.segment import Segment
from rich.style import Style
from textual.widget import Widget

EIGHTHS = " ▁▂▃▄▅▆▇█"


def bar_rows(values: Sequence[float], top: float, width: int, height: int) -> list[str]:
    """`height` lines of `width` columns: the last `width` values as bars, right-aligned.

    A value above 0 is at least one eighth high, so a small rate is never drawn as none."""
    vals = list(values)[-width:] if width > 0 else []
    cols = []
    for v in vals:
        f = 0.0 if top <= 0 else max(0.0, min(1.0, v / top))
        n = round(f * height * 8)
        cols.append(max(n, 1) if v > 0 else 0)
    rows = []
    for r in range(height):
        base = (height - 1 - r) * 8
        line = "".join(EIGHTHS[max(0, min(8, n - base))] for n in cols)
        rows.append(line.rjust(width))
    return rows


class ChartRender:
    def __init__(
        self,
        title: str,
        values: Sequence[float],
        top: float,
        label: Callable[[float], str],
        style: Style,
        width: int,
        height: int,
    ) -> None:
        self.title, self.values, self.top, self.label = title, values, top, label
        self.style, self.width, self.height = style, width, height

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        w, h = self.width, self.height
        now = self.label(self.values[-1]) if self.values else "—"
        yield Segment(f"{self.title}: {now}"[:w].ljust(w))
        if h < 2:
            return
        axis_top, axis_bottom = self.label(self.top), self.label(0.0)
        lw = max(len(axis_top), len(axis_bottom)) + 1
        rows = bar_rows(self.values, self.top, max(0, w - lw), h - 1)
        for i, line in enumerate(rows):
            tick = axis_top if i == 0 else axis_bottom if i == len(rows) - 1 else ""
            yield Segment("\n")
            yield Segment(tick.rjust(lw - 1) + "▕")
            yield Segment(line, self.style)


class Chart(Widget):
    """Set `values` (and `style`, a Rich style string from the theme) and it redraws."""

    DEFAULT_CSS = "Chart { height: 1fr; min-height: 2; }"

    def __init__(self, title: str, top: float, label: Callable[[float], str], **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.title = title
        self.top = top
        self.label = label
        self.values: list[float] = []
        self.style = ""

    def show(self, values: Iterable[float], style: str = "") -> None:
        values = list(values)
        if values != self.values or style != self.style:
            self.values, self.style = values, style
            self.refresh()

    def render(self) -> ChartRender:
        return ChartRender(
            self.title,
            self.values,
            self.top,
            self.label,
            Style.parse(self.style) if self.style else Style.null(),
            self.size.width,
            self.size.height,
        )
