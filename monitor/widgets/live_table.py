"""A DataTable that repaints from the model in place: sort, regex filter, show/hide columns.

Rows are added once and their cells updated with `update_cell` only when the text changed;
the table is rebuilt only when the operator changes the filter or the columns, never per tick.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable


class Cell(Text):
    """Rich text that also carries the raw value the column sorts by."""

    sort_key: Any = None


def cell(text: str, style: str = "", sort_key: Any = None) -> Cell:
    c = Cell(text, style=style)
    c.sort_key = text if sort_key is None else sort_key
    return c


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
        self.palette: dict[str, str] = {}

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
    def sync(
        self, records: Iterable[tuple[str, Any]], changed: set[str] | None,
        limit: int | None = None,
    ) -> int:  # fmt: skip
        """Add new rows, update changed cells in place, drop rows the filter now hides.

        `changed=None` means every row may have changed. Returns cells written.
        """
        writes = 0
        visible = [c.key for c in self.COLUMNS if c.key not in self.hidden]
        for key, rec in records:
            shown = self._shown.get(key)
            if shown is not None and changed is not None and key not in changed:
                continue
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
                continue
            for k in visible:
                if new[k] != shown.get(k):
                    self.update_cell(key, k, new[k])
                    writes += 1
            self._shown[key] = new
        if limit is not None:
            self.trim(limit)
        if self.sort_col and writes:
            self._apply_sort()
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
