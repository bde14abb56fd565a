"""A DataTable that repaints from the model in place: sort, regex filter, show/hide columns.

Rows are added once and their cells updated with `update_cell` only when the text changed;
the table is rebuilt only when the operator changes the filter or the columns, never per tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from typing import Any, ClassVar

from rich.cells import cell_len, set_cell_size
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual._segment_tools import line_crop
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.content import Content
from textual.coordinate import Coordinate
from textual.css.styles import RenderStyles
from textual.geometry import Region
from textual.scrollbar import ScrollBarRender
from textual.strip import Strip
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, CellKey, ColumnKey, RowKey

from fpmon.monitor.format import printable

CELL_CACHE = 4000  # before the first resize; then two screens of cells (`_size_cell_cache`)
CELL_CACHE_MIN = 256
LINE_CACHE = 400


@lru_cache(maxsize=256)
def _style(spec: str) -> Style:
    return Style.parse(spec) if spec else Style.null()


@lru_cache(maxsize=16384)
def _meta(row: int, column: int) -> Style:
    # The mouse maps clicks through this meta; building it pickles a dict every time.
    return Style.from_meta({"row": row, "column": column})


@lru_cache(maxsize=4096)
def _meta_beyond(row: int) -> Style:
    return Style.from_meta({"row": row, "column": 0, "out_of_bounds": True})


class Cell:
    """One line of styled text that renders as a single Segment, and the raw value its
    column sorts by. Rich `Text` goes through wrapping and span joining for every cell on
    every repaint; a fleet table repaints hundreds of cells, so cells stay this simple.
    `tip`: the why behind a short cell (a `—`), shown as the table's tooltip on hover."""

    __slots__ = ("sort_key", "style", "text", "tip")

    def __init__(self, text: str, style: str = "", sort_key: Any = None, tip: str = "") -> None:
        # Cells hold the wire's words (node names, reasons): an escape sequence in one would
        # be written to the terminal as is, since this fast path skips Rich's own handling.
        self.text = text if text.isprintable() else printable(text)
        self.style = style
        self.sort_key = text if sort_key is None else sort_key
        self.tip = tip

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Segment(self.text, _style(self.style))

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        n = cell_len(self.text)
        return Measurement(n, n)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Cell)
            and self.text == other.text
            and self.style == other.style
            and self.tip == other.tip
        )

    __hash__ = None  # type: ignore[assignment]

    def __str__(self) -> str:
        return self.text

    def __repr__(self) -> str:
        return f"Cell({self.text!r}, {self.style!r})"


def cell(text: str, style: str = "", sort_key: Any = None, tip: str = "") -> Cell:
    return Cell(text, style, sort_key, tip)


def _sort_key(value: Any) -> tuple:
    k = getattr(value, "sort_key", value)
    if k is None:
        return (1, 0)
    return (0, k) if isinstance(k, int | float) else (0, str(k))


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    width: int  # the least it gets; a `flex` column also takes the table's spare width
    visible: bool = True
    flex: bool = False


SORT_MARK = {False: "▲", True: "▼"}  # ascending, descending: prefixed to the sorted header


class WholeCellScrollBar(ScrollBarRender):
    """Scrollbar thumbs in whole cells. Textual's default draws the thumb's ends with eighth
    blocks (▁▆▉...) in the thumb colour over the track: in a 256-colour terminal (tmux's
    default) track and thumb come out alike and those ends read as stray glyphs."""

    VERTICAL_BARS: ClassVar[list[str]] = [" "] * 8
    HORIZONTAL_BARS: ClassVar[list[str]] = [" "] * 8


class _NoCache:
    """Stands in for DataTable's row cache, which is keyed by the table-wide update count:
    LiveTable keys lines by each row's own version instead (see `_render_line`)."""

    def __contains__(self, key: object) -> bool:
        return False

    def __setitem__(self, key: object, value: object) -> None:
        pass

    def clear(self) -> None:
        pass


class LiveTable(DataTable):
    """Subclasses set COLUMNS and implement `cells(record)` and `search_text(record)`.

    Repainting is row by row. DataTable's `update_cell` bumps one table-wide count that keys
    every render cache and refreshes the whole widget, so one changed cell re-rendered every
    visible cell (~600 at 160x40). Here a changed cell bumps its row's version and refreshes
    that row's region only if it is on screen: Textual renders just those lines, and a line
    is cached by (row, version, position, cursor), a cell by its text and style. A row that
    changed off screen is drawn fresh when it scrolls in. Structural changes (rows added or
    removed, sort, columns, resize) still bump the count and redraw everything.
    """

    COLUMNS: tuple[Column, ...] = ()
    OFFSCREEN_BUDGET = 16
    # DataTable's own caches, holding our cell and line keys (see `_render_cell`,
    # `_render_line`) beside the stock path's: DataTable's clears (restyle, clear, resize)
    # then drop ours too. Typed here for both kinds of key.
    _cell_render_cache: LRUCache[tuple[Any, ...], list[list[Segment]]]
    _line_cache: LRUCache[tuple[Any, ...], Strip]
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
        self._row_render_cache = _NoCache()  # type: ignore[assignment]
        self._row_renderable_cache = LRUCache(LINE_CACHE)
        self._line_cache = LRUCache(LINE_CACHE)
        self.palette: dict[str, str] = {}
        # Our own name: DOMNode's `_component_styles` is Textual's (component -> RenderStyles),
        # which its stylesheet clears and refills whenever it restyles the table.
        self._rich_styles: dict[tuple[str, Any], tuple[RenderStyles | None, Style]] = {}
        self._row_version: dict[RowKey, int] = {}
        self._versions = 0  # never reused: a row key removed and added again starts anew
        self._changed_rows: set[RowKey] = set()
        self._tip = ""  # the hovered cell's tip, shown as the tooltip

    def on_mount(self) -> None:
        # Per instance, as Textual's own docs show, though it types `renderer` a ClassVar.
        self.vertical_scrollbar.renderer = WholeCellScrollBar  # type: ignore[misc]
        self.horizontal_scrollbar.renderer = WholeCellScrollBar  # type: ignore[misc]
        self._add_columns()

    def _update_column_widths(self, updated_cells: set[CellKey]) -> None:
        """Every column here has a set width (`Column.width`, or the spare width for a flex
        one): measuring updated cells, which DataTable does for content-sized columns, is
        work for nothing, and a narrower value made it measure the whole column."""
        self._require_update_dimensions = True

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
        # By content and place (the mouse meta names the place), not by the update count:
        # a cell whose text did not change is not rendered again.
        key = (
            row_index,
            column_index,
            value.text,
            value.style,
            base_style,
            cursor,
            hover,
            self._show_hover_cursor,
            self._pseudo_class_state,
            width,
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
        room = max(0, width - 2 * pad)
        text = value.text
        if cell_len(text) > room:  # cut, and say so
            text = set_cell_size(text, room - 1) + "…" if room > 1 else set_cell_size(text, room)
        else:
            text = set_cell_size(text, room)
        edge = pre + post_style
        segments = [Segment(text, pre + _style(value.style) + post_style)]
        if pad:
            segments = [Segment(" " * pad, edge), *segments, Segment(" " * pad, edge)]
        cache[key] = [segments]
        return cache[key]

    def update_cell(
        self,
        row_key: RowKey | str,
        column_key: ColumnKey | str,
        value: Any,
        *,
        update_width: bool = False,
    ) -> None:
        """As DataTable's, but only this row is marked changed (see the class docstring)."""
        if isinstance(row_key, str):
            row_key = RowKey(row_key)
        if isinstance(column_key, str):
            column_key = ColumnKey(column_key)
        if row_key not in self._row_locations or column_key not in self._column_locations:
            raise CellDoesNotExist(f"No cell exists for {row_key!r}, {column_key!r}.")
        self._data[row_key][column_key] = value
        self._versions += 1
        self._row_version[row_key] = self._versions
        self._changed_rows.add(row_key)

    def watch_hover_coordinate(self, old: Coordinate, value: Coordinate) -> None:
        super().watch_hover_coordinate(old, value)
        self._hover_tip()

    def _hover_tip(self) -> None:
        """The hovered cell's `tip` as the tooltip (None hides it)."""
        try:
            value = self.get_cell_at(self.hover_coordinate)
        except CellDoesNotExist:
            value = None
        tip = getattr(value, "tip", "")
        if tip != self._tip:
            self._tip = tip
            # Content, not a str: a tooltip string is read as markup, and a tip quotes the
            # wire (process names) where a `[` must not be taken for a tag.
            self.tooltip = Content(tip) if tip else None

    def _refresh_changed_rows(self) -> None:
        """Redraw the changed rows that are on screen, each once (rows are one line high)."""
        if not self._changed_rows:
            return
        top = int(self.scroll_y)
        bottom = top + self.size.height
        header = self.header_height if self.show_header else 0
        width = self.size.width
        for key in self._changed_rows:
            i = self._row_locations.get(key)
            if i is not None and top <= i + header < bottom:
                self.refresh(Region(0, i + header - top, width, 1))
        self._changed_rows.clear()

    def _render_line(self, y: int, x1: int, x2: int, base_style: Style) -> Strip:
        """DataTable's, with the line cached by the row's version (not the update count)."""
        width = self.size.width
        try:
            row_key, line_no = self._get_offsets(y)
        except LookupError:
            return Strip.blank(width, base_style)
        index = self._row_locations.get(row_key)
        if index is None:
            index = -1  # the header
        cursor, hover = self.cursor_coordinate, self.hover_coordinate
        by_row = self.cursor_type == "row"
        cache_key = (
            row_key,
            self._row_version.get(row_key, 0),
            index,
            line_no,
            x1,
            x2,
            width,
            cursor.row == index if by_row else cursor,
            hover.row == index if by_row else hover,
            base_style,
            self.cursor_type,
            self.show_cursor,
            self._show_hover_cursor,
            self._update_count,
            self._pseudo_class_state,
        )
        cached = self._line_cache.get(cache_key)
        if cached is not None:
            return cached
        fixed, scrollable = self._render_line_in_row(
            row_key, line_no, base_style, cursor_location=cursor, hover_location=hover
        )
        fixed_cols = self.ordered_columns[: self.fixed_columns]
        fixed_width = sum(c.get_render_width(self) for c in fixed_cols)
        fixed_line: list[Segment] = [seg for cell in fixed for seg in cell]
        scrollable_line: list[Segment] = [seg for cell in scrollable for seg in cell]
        segments = fixed_line + line_crop(scrollable_line, x1 + fixed_width, x2, width)
        strip = Strip(segments).adjust_cell_length(width, base_style).simplify()
        self._line_cache[cache_key] = strip
        return strip

    def _component_style(self, name: str) -> Style:
        """A component class's Rich style, computed once per theme and pseudo-class state
        (DataTable computed the header's and the zebra stripe's for every line drawn)."""
        key = (name, self._pseudo_class_state)
        # Textual restyles a component by putting a new RenderStyles in its place, at times
        # without notify_style_update: a style computed from an older one is stale.
        source = self._component_styles.get(name)
        cached = self._rich_styles.get(key)
        if cached is not None and cached[0] is source:
            return cached[1]
        style = self.get_component_styles(name).rich_style
        self._rich_styles[key] = (source, style)
        return style

    def notify_style_update(self) -> None:
        self._rich_styles.clear()
        super().notify_style_update()

    def _get_row_style(self, row_index: int, base_style: Style) -> Style:
        if row_index == -1:
            return self._component_style("datatable--header")
        if row_index < self.fixed_rows:
            return self._component_style("datatable--fixed")
        if self.zebra_stripes:
            return self._component_style(
                "datatable--odd-row" if row_index % 2 else "datatable--even-row"
            )
        return base_style

    def _render_line_in_row(
        self,
        row_key: RowKey,
        line_no: int,
        base_style: Style,
        cursor_location: Coordinate,
        hover_location: Coordinate,
    ) -> tuple[list, list]:
        """DataTable's, for a row-cursor table without fixed columns or row labels (these
        tables), with styles from `_component_style`; uncached: `_render_line` caches lines."""
        cursor_type = self.cursor_type
        labels = self._labelled_row_exists and self.show_row_labels
        if self.fixed_columns or labels or cursor_type != "row":
            return super()._render_line_in_row(
                row_key, line_no, base_style, cursor_location, hover_location
            )
        index = self._row_locations.get(row_key)
        row_index = -1 if index is None else index
        row_style = self._get_row_style(row_index, base_style)
        hl = self._should_highlight
        render_cell = self._render_cell
        cells = []
        used = self._row_label_column_width
        for column_index, column in enumerate(self.ordered_columns):
            where = Coordinate(row_index, column_index)
            width = column.get_render_width(self)
            used += width
            cells.append(
                render_cell(
                    row_index,
                    column_index,
                    row_style,
                    width,
                    cursor=hl(cursor_location, where, cursor_type),
                    hover=hl(hover_location, where, cursor_type),
                )[line_no]
            )
        remaining = max(0, self.size.width - used)
        extend, _ = self._get_styles_to_render_cell(
            row_index == -1,
            False,
            False,
            hl(hover_location, Coordinate(row_index or 0, 0), cursor_type),
            row_index == cursor_location.row,
            self.show_cursor,
            self._show_hover_cursor,
            False,
            False,
        )
        extend_style = row_style + extend
        cells.append([Segment(" " * remaining, extend_style + _meta_beyond(row_index))])
        return [], cells

    def remove_row(self, row_key: RowKey | str) -> None:
        key = RowKey(row_key) if isinstance(row_key, str) else row_key
        self._row_version.pop(key, None)
        self._changed_rows.discard(key)
        super().remove_row(row_key)

    def clear(self, columns: bool = False) -> LiveTable:
        self._row_version.clear()
        self._changed_rows.clear()
        super().clear(columns)
        return self

    # -- what subclasses provide ---------------------------------------------------------
    def cells(self, record: Any) -> dict[str, Any]:  # column key -> cell
        raise NotImplementedError

    def search_text(self, record: Any) -> str:
        raise NotImplementedError

    # -- structure (operator actions only) -----------------------------------------------
    def _add_columns(self) -> None:
        for c in self.COLUMNS:
            if c.key not in self.hidden:
                self.add_column(self._label(c), width=c.width, key=c.key)
        self._fit_columns()

    def _label(self, c: Column) -> Text:
        if c.key == self.sort_col:
            return Text(f"{SORT_MARK[self.sort_reverse]} {c.label}")
        return Text(c.label)

    def _relabel(self) -> None:
        """Mark the sorted column's header (▲ ascending, ▼ descending)."""
        for c in self.COLUMNS:
            col = self.columns.get(ColumnKey(c.key))
            if col is not None:
                col.label = self._label(c)
        self._update_count += 1  # the header row is cached by this count
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._fit_columns()
        self._size_cell_cache()

    def _size_cell_cache(self) -> None:
        """Two screens of cells. Every repaint renders the visible cells anew under a new update
        count, so entries beyond that are dead: a larger cache only grew the process for its
        first minutes (RSS not flat in a 60 s run of bench/monitor_load.py) and kept garbage
        for the collector to walk."""
        cells = max(1, self.size.height) * max(1, len(self.columns))
        size = max(CELL_CACHE_MIN, 2 * cells)
        if size != self._cell_render_cache.maxsize:
            # A new cache, not a new maxsize: LRUCache stays at the size it first filled to.
            self._cell_render_cache = LRUCache(size)

    def _fit_columns(self) -> None:
        """Give a flex column (reason, message) the width the others leave: text is cut only
        where the terminal has no room for it. A vertical scrollbar's width is always kept."""
        flex = [c for c in self.COLUMNS if c.flex and c.key not in self.hidden]
        if not flex or not self.size.width:
            return
        pad = 2 * self.cell_padding
        fixed = sum(c.width + pad for c in self.COLUMNS if c.key not in self.hidden and not c.flex)
        room = self.size.width - self.styles.scrollbar_size_vertical - fixed
        share = room // len(flex) - pad
        changed = False
        for c in flex:
            col = self.columns.get(ColumnKey(c.key))
            w = max(c.width, share)
            if col is not None and col.width != w:
                col.width = w
                changed = True
        if changed:
            self._require_update_dimensions = True
            self._update_count += 1
            self.refresh()

    def rebuild(self, records: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> None:
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
        records: Iterable[tuple[str, Any]] | Mapping[str, Any],
        changed: set[str] | None,
        limit: int | None = None,
        lazy: bool = False,
    ) -> int:
        """Add new rows, update changed cells in place, drop rows the filter now hides.

        `changed=None` means every row may have changed. `lazy` (records as a mapping, key ->
        record): rows on screen are updated, rows off screen at most OFFSCREEN_BUDGET per
        call and otherwise remembered as stale, so a 1,000-node fleet costs what the visible
        rows cost (nvitop/k9s do the same); only changed keys are looked at. Returns cells
        written.
        """
        visible = [c.key for c in self.COLUMNS if c.key not in self.hidden]
        pairs: Iterable[tuple[str, Any]]
        if lazy and isinstance(records, Mapping):
            pairs = self._lazy_pairs(records, changed)
        elif isinstance(records, Mapping):
            pairs = records.items()
        else:
            pairs = records
        writes = 0
        resort = False
        shown_rows = self._shown
        for key, rec in pairs:
            shown = shown_rows.get(key)
            if shown is not None and not lazy and changed is not None and key not in changed:
                continue
            if not self.matches(rec):
                if shown is not None:
                    self.remove_row(key)
                    del shown_rows[key]
                continue
            new = self.cells(rec)
            if shown is None:
                self.add_row(*(new[k] for k in visible), key=key)
                shown_rows[key] = new
                writes += len(visible)
                resort = True
                continue
            for k in visible:
                if new[k] != shown.get(k):
                    self.update_cell(key, k, new[k])
                    writes += 1
                    resort = resort or k == self.sort_col
            shown_rows[key] = new
        if limit is not None:
            self.trim(limit)
        if resort and self.sort_col:
            self._apply_sort()  # only when rows came or the sorted column's values moved
        self._refresh_changed_rows()
        return writes

    def _lazy_pairs(
        self, records: Mapping[str, Any], changed: set[str] | None
    ) -> list[tuple[str, Any]]:
        """The (key, record) pairs a lazy sync paints now: changed (or stale) rows on screen,
        up to OFFSCREEN_BUDGET changed rows off screen (the others stay stale), and every
        changed key without a row (new, or hidden by the filter: it may match now)."""
        shown = self._shown
        todo = (set(records) if changed is None else changed) | self._stale
        on_screen = self.visible_keys() & todo
        rest = todo - on_screen
        off = {k for k in rest if k in shown}
        batch = list(islice(off, self.OFFSCREEN_BUDGET))
        self._stale = off.difference(batch)
        unshown = rest - off
        pairs = [(k, records[k]) for k in (*on_screen, *batch) if k in records]
        if unshown:  # added in the records' own order (the table's order until sorted)
            pairs += [(k, r) for k, r in records.items() if k in unshown]
        return pairs

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
        self._relabel()
        self._apply_sort()

    def _apply_sort(self) -> None:
        if self.sort_col and self.sort_col not in self.hidden:
            self.sort(self.sort_col, key=_sort_key, reverse=self.sort_reverse)

    def style(self, var: str) -> str:
        return self.palette.get(var, "")


def palette_of(get_vars: Callable[[], dict[str, str]]) -> dict[str, str]:
    v = get_vars()
    return {k: v[k] for k in v if k.startswith("fpmon-") or k in ("foreground-muted", "error")}
