"""Help (every binding by id and key) and the show/hide columns picker."""

from __future__ import annotations

from typing import ClassVar

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

    def __init__(self, rows: list[tuple[str, str, str]]) -> None:
        super().__init__()
        self.rows = rows

    def compose(self) -> ComposeResult:
        with Vertical(id="help-body"):
            yield Static(
                "fpmon keys — rebind any of them by id in the config's [keymap] "
                '(e.g. fleet = "f1"). Ctrl+P: command palette. Mouse: click rows, headers.'
            )
            yield DataTable(id="help-table", cursor_type="row")

    def on_mount(self) -> None:
        t = self.query_one(DataTable)
        t.add_columns("key", "action", "id")
        for key, desc, bid in self.rows:
            t.add_row(key, desc, bid)


class ColumnsScreen(ModalScreen[set]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "done", "Apply", id="columns.done")
    ]

    def __init__(self, table: LiveTable) -> None:
        super().__init__()
        self.table = table

    def compose(self) -> ComposeResult:
        with Vertical(id="columns-body"):
            yield Static("Space toggles a column; Enter or Esc applies.")
            yield SelectionList(
                *[(c.label, c.key, c.key not in self.table.hidden) for c in self.table.COLUMNS],
                id="columns-list",
            )

    def action_done(self) -> None:
        chosen = set(self.query_one(SelectionList).selected)
        self.dismiss({c.key for c in self.table.COLUMNS} - chosen)
