"""A DataTable that repaints from the model in place: sort, regex filter, show/hide columns.

Rows are added once and their cells updated with `update_cell` only when the text changed;
the table is rebuilt only when the operator changes the filter or the columns, never per tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.widgets import DataTable

CELL_CACHE = 4000  # about four screens of cells
LINE_CACHE = 400


@lru_cache(maxsize=256)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style.null()


@lru_cache(maxsize=16384)
def _meta(row: int, column: int) -> Style:
    # The mouse maps clicks through this meta; building it pickles a dict every time.
    return Style.from_meta({"row": row, "column": column})


class Cell:
    """One line of styled text that renders as a single Segment, and the raw value its
    column sorts by. Rich `Text` goes through wrapping and span joining for every cell on
    every repaint; a fleet table repaints hundreds of cells, so cells stay this simple."""

    __slots__ = ("sort_key", "style", "text")

    def __init__(self, text: str, style: str = "", sort_key: Any = None) -> None:
        self.text = text
        self.style = style
        self.sort_key = text if sort_key is None else sort_key

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.text, _style(self.style))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        n = cell_len(self.text)
        return Measurement(n, n)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cell) and self.text == other.text and self.style == other.style

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Cell({self.text!r}, {self.style!r})"


def cell(text: str, style: str = "", sort_key: Any = None) -> Cell:
    return Cell(text, style, sort_key)


def _sort_key(value: Any) -> tuple:
    k = getattr(value, "sort_key", value)
    if k is None:
        return (1, 0)
    return (0, k) if isinstance(k, int | float) else (0, str(k))


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int
    visible: bool = True


class LiveTable(DataTable):
    """Subclasses set COLUMNS and implement `cells(record)` and `search_text(record)`."""

    COLUMNS: tuple[Column, ...] = ()
    OFFSCREEN_BUDGET = 16
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("s", "sort_next", "Sort", id="table.sort"),
        Binding("S", "sort_reverse", "Reverse", show=False, id="table.sort_reverse"),
    ]

    def __init__(self, **kw: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)
        self.hidden = {c.key for c in self.COLUMNS if not c.visible}
        self.pattern: re.Pattern | None = None
        self.sort_col: str | None = None
        self.sort_reverse = False
        self._shown: dict[str, dict[str, Any]] = {}  # row key -> column key -> cell as painted
        self._stale: set[str] = set()  # off-screen rows changed since they were painted
        # DataTable keys its render caches by an update count that every update_cell bumps,
        # so in a live table nearly every cached entry is dead. Its defaults (10,000 cells,
        # 1,000 rows/lines) kept ~150k objects alive here, and the garbage collector's full
        # passes over them took 100-300 ms (bench/monitor_load.py): size them to a screen.
        self._cell_render_cache = LRUCache(CELL_CACHE)
        self._row_render_cache = LRUCache(LINE_CACHE)
        self._row_renderable_cache = LRUCache(LINE_CACHE)
        self._line_cache = LRUCache(LINE_CACHE)
        self.palette: dict[str, str] = {}

    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> list[list[Segment]]:
        """Fast path for our one-line `Cell`s: the same segments and styles DataTable makes
        through Rich's Padding/Styled/render_lines, built directly (measured ~3x cheaper per
        cell; any update_cell makes DataTable re-render every visible cell). Headers, labels
        and anything else take the stock path. Textual is pinned (8.2.8); snapshots check it."""
        if row_index < 0 or column_index < 0 or self.fixed_rows or self.fixed_columns:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        if row_key is None or column_key is None:  # no such cell (yet): the stock path
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        value = self._data.get(row_key, {}).get(column_key)
        rows = self.rows.get(row_key)
        if not isinstance(value, Cell) or rows is None or rows.height != 1:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        key = (
            row_key,
            column_key,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cache = self._cell_render_cache
        if key in cache:
            return cache[key]
        component_style, post_style = self._get_styles_to_render_cell(
            False,
            False,
            False,
            hover,
            cursor,
            self.show_cursor,
            self._show_hover_cursor,
            self.cursor_foreground_priority == "css",
            self.cursor_background_priority == "css",
        )
        pre = base_style + _meta(row_index, column_index)
        pre += component_style
        pad = min(self.cell_padding, width // 2)
        text = set_cell_size(value.text, max(0, width - 2 * pad))
        edge = pre + post_style
        segments = [Segment(text, pre + _style(value.style) + post_style)]
        if pad:
            segments = [Segment(" " * pad, edge), *segments, Segment(" " * pad, edge)]
        cache[key] = [segments]
        return cache[key]

    # -- what subclasses provide ---------------------------------------------------------
    def cells(self, record: Any) -> dict[str, Any]:  # column key -> cell
        raise NotImplementedError

    def search_text(self, record: Any) -> str:
        raise NotImplementedError

    # -- structure (operator actions only) -----------------------------------------------
    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for c in self.COLUMNS:
            if c.key not in self.hidden:
                self.add_column(c.label, width=c.width, key=c.key)

    def rebuild(self, records: Iterable[tuple[str, Any]]) -> None:
        self.clear(columns=True)
        self._shown.clear()
        self._stale.clear()
        self._add_columns()
        self.sync(records, None)

    def set_filter(self, text: str) -> str | None:
        """Set the regex filter; returns an error message instead of raising on a bad one."""
        try:
            self.pattern = re.compile(text, re.IGNORECASE) if text else None
        except re.error as e:
            return f"bad regex {text!r}: {e}"
        return None

    def matches(self, record: Any) -> bool:
        return self.pattern is None or bool(self.pattern.search(self.search_text(record)))

    def toggle_column(self, key: str) -> None:
        self.hidden ^= {key}

    # -- painting ------------------------------------------------------------------------
    def visible_keys(self) -> set[str]:
        """Keys of the rows on screen now (every row is one line high)."""
        y0 = int(self.scroll_y)
        out = set()
        for i in range(y0, min(self.row_count, y0 + max(1, self.size.height))):
            k = self._row_locations.get_key(i)
            if k is not None:
                out.add(str(k.value))
        return out

    def sync(
        self,
        records: Iterable[tuple[str, Any]],
        changed: set[str] | None,
        limit: int | None = None,
        lazy: bool = False,
    ) -> int:
        """Add new rows, update changed cells in place, drop rows the filter now hides.

        `changed=None` means every row may have changed. `lazy`: rows off screen are updated
        at most OFFSCREEN_BUDGET per call and otherwise remembered as stale, so a 1,000-node
        fleet costs what the visible rows cost (nvitop/k9s do the same). Returns cells written.
        """
        writes = 0
        resort = False
        visible = [c.key for c in self.COLUMNS if c.key not in self.hidden]
        on_screen = self.visible_keys() if lazy else None
        budget = self.OFFSCREEN_BUDGET
        stale = self._stale
        for key, rec in records:
            shown = self._shown.get(key)
            if shown is not None:
                if changed is not None and key not in changed and key not in stale:
                    continue
                if on_screen is not None and key not in on_screen:
                    if budget <= 0:
                        stale.add(key)
                        continue
                    budget -= 1
                stale.discard(key)
            if not self.matches(rec):
                if shown is not None:
                    self.remove_row(key)
                    del self._shown[key]
                continue
            new = self.cells(rec)
            if shown is None:
                self.add_row(*(new[k] for k in visible), key=key)
                self._shown[key] = new
                writes += len(visible)
                resort = True
                continue
            for k in visible:
                if new[k] != shown.get(k):
                    self.update_cell(key, k, new[k])
                    writes += 1
                    resort = resort or k == self.sort_col
            self._shown[key] = new
        if limit is not None:
            self.trim(limit)
        if resort and self.sort_col:
            self._apply_sort()  # only when rows came or the sorted column's values moved
        return writes

    def trim(self, limit: int) -> None:
        while len(self._shown) > limit:
            oldest = next(iter(self._shown))
            self.remove_row(oldest)
            del self._shown[oldest]

    def repaint_all(self) -> None:
        """The theme changed: every styled cell must be repainted on the next sync."""
        for shown in self._shown.values():
            shown.clear()

    def action_sort_next(self) -> None:
        """Sort by the next visible column (a header click sorts by that column)."""
        keys = [c.key for c in self.COLUMNS if c.key not in self.hidden]
        if not keys:
            return
        i = keys.index(self.sort_col) + 1 if self.sort_col in keys else 0
        self.sort_by(keys[i % len(keys)], self.sort_reverse)
        self.notify(f"sorted by {self.sort_col}{' (descending)' if self.sort_reverse else ''}")

    def action_sort_reverse(self) -> None:
        if self.sort_col:
            self.sort_by(self.sort_col, not self.sort_reverse)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.sort_by(str(event.column_key.value))

    def sort_by(self, key: str, reverse: bool | None = None) -> None:
        if reverse is None:
            reverse = not self.sort_reverse if self.sort_col == key else False
        self.sort_col, self.sort_reverse = key, reverse
        self._apply_sort()

    def _apply_sort(self) -> None:
        if self.sort_col and self.sort_col not in self.hidden:
            self.sort(self.sort_col, key=_sort_key, reverse=self.sort_reverse)

    def style(self, var: str) -> str:
        return self.palette.get(var, "")


def palette_of(get_vars: Callable[[], dict[str, str]]) -> dict[str, str]:
    v = get_vars()
    return {k: v[k] for k in v if k.startswith("fpmon-") or k in ("foreground-muted", "error")}
