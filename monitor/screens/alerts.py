"""Alerts: chain breaks, unopened challenges, mismatches, hidden work, capacity; acknowledge.

One row per node and kind (the model groups repeats): count, first and last seen, latest
evidence. Acknowledging a row acknowledges the group until that kind recurs on that node."""

from __future__ import annotations

from collections.abc import Mapping
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
        Binding("h", "capacity", "Hidden work", id="capacity"),
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

    def rows(self) -> Mapping[str, AlertEntry]:
        return self.app.model.alerts  # alert_key -> group

    def rebuild(self) -> None:
        self._painted = -1
        self.table.palette = self.app.palette
        self.table.rebuild(self.rows())

    _painted = -1  # model.alerts_version last painted

    def repaint(self, full: bool = False) -> None:
        if not self.ready():
            return
        model = self.app.model
        t = self.table
        t.palette = self.app.palette
        if full or model.alerts_version != self._painted or t._stale:
            self._painted = model.alerts_version
            # Rows on screen are compared in full; off-screen ones catch up a few at a time.
            t.sync(self.rows(), None, lazy=True)
            if len(t._shown) > len(model.alerts):
                for key in [k for k in t._shown if k not in model.alerts]:  # evicted
                    t.remove_row(key)
                    del t._shown[key]
        n = len(model.alerts)
        self.say(
            f"! {model.open_alerts} open of {n} (node, kind) group{'s' if n != 1 else ''}  │ "
            f"{model.alerts_total} alerts received"
            + ("  │ read-only inspector mode" if self.app.inspector else "")
        )

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Read-only inspector mode changes nothing.
        return not (action.startswith("acknowledge") and self.app.inspector)

    def _ack(self, keys: list[str]) -> None:
        n = sum(self.app.model.acknowledge(k) for k in keys)
        self.notify(f"acknowledged {n} alert group(s)")
        self.repaint()

    def action_acknowledge(self) -> None:
        t = self.table
        if t.row_count:
            self._ack([str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)])

    def action_acknowledge_all(self) -> None:
        self._ack(list(self.table._shown))

    def action_capacity(self) -> None:
        """The capacity evidence of the selected group's node."""
        t = self.table
        if not t.row_count:
            return
        key = str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)
        entry = self.app.model.alerts.get(key)
        if entry is not None:
            self.app.show_capacity(entry.alert.node)
