"""Alerts: chain breaks, unopened challenges, mismatches, hidden work, capacity; acknowledge."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import Footer, Header

from fpmon.monitor.model import AlertEntry
from fpmon.monitor.screens.base import LiveScreen
from fpmon.monitor.widgets.tables import AlertTable


class AlertsScreen(LiveScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("a", "acknowledge", "Acknowledge", id="alerts.ack"),
        Binding("A", "acknowledge_all", "Ack all shown", id="alerts.ack_all"),
    ]

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.summary_bar()
        yield self.filter_input()
        self.table = AlertTable(id="alerts")
        yield self.table
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()

    def rows(self) -> Iterable[tuple[str, AlertEntry]]:
        return self.app.model.alerts.items()

    def rebuild(self) -> None:
        self.table.palette = self.app.palette
        self.table.rebuild(self.rows())

    def repaint(self, full: bool = False) -> None:
        if not self.ready():
            return
        model = self.app.model
        self.table.palette = self.app.palette
        # Alerts are few (bounded) and change in place (count, acked): compare all of them.
        self.table.sync(self.rows(), None)
        for key in [k for k in self.table._shown if k not in model.alerts]:
            self.table.remove_row(key)
            del self.table._shown[key]
        self.summary.update(
            f"! {model.open_alerts} open  │ {len(model.alerts)} kept"
            + ("  │ read-only inspector mode" if self.app.inspector else "")
        )

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Read-only inspector mode changes nothing.
        return not (action.startswith("acknowledge") and self.app.inspector)

    def _ack(self, keys: list[str]) -> None:
        n = sum(self.app.model.acknowledge(k) for k in keys)
        self.notify(f"acknowledged {n} alert(s)")
        self.repaint()

    def action_acknowledge(self) -> None:
        t = self.table
        if t.row_count:
            self._ack([str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)])

    def action_acknowledge_all(self) -> None:
        self._ack(list(self.table._shown))
