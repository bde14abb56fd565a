"""Help (every binding by id and key) and the show/hide columns picker."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, SelectionList, Static

from fpmon.monitor.widgets.live_table import LiveTable


class HelpScreen(ModalScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", id="help.close")
    ]

    def __init__(self, rows: list[tuple[str, str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help-body"):
            # markup=False: "[keymap]" is text here, not a Rich style tag (which it vanished as).
            yield Static(
                "fpmon keys. Rebind any of them by id in the config's [keymap] table "
                '(e.g. fleet = "f1"). Ctrl+P: command palette. Mouse: click rows, headers.',
                markup=False,
                id="help-text",
            )
            yield DataTable(id="help-table", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("key", "action", "where", "id")
        for key, desc, where, bid in self.rows:
            t.add_row(Text(key), Text(desc), Text(where), Text(bid))


class ColumnsScreen(ModalScreen[set]):
    """Space (or a click) toggles the highlighted column; Enter or Esc applies and closes.

    Enter is bound with priority: the SelectionList would otherwise take it as a toggle,
    undoing the last change just before the dialog closed."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "done", "Apply", priority=True, id="columns.done"),
        Binding("escape", "done", "Apply", id="columns.done_esc"),
    ]

    def __init__(self, table: LiveTable) -> None:
        super().__init__()
        self.table = table

    def compose(self) -> ComposeResult:
        with Vertical(id="columns-body"):
            yield Static("Space toggles a column; Enter or Esc applies.", markup=False)
            yield SelectionList(
                *[(c.label, c.key, c.key not in self.table.hidden) for c in self.table.COLUMNS],
                id="columns-list",
            )

    def action_done(self) -> None:
        chosen = set(self.query_one(SelectionList).selected)
        self.dismiss({c.key for c in self.table.COLUMNS} - chosen)
