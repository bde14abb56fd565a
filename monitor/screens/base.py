"""What every live screen shares: a regex filter box, a table repainted from the model."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from textual import on
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import Input, Static

from fpmon.monitor.widgets.live_table import LiveTable

if TYPE_CHECKING:
    from textual import getters

    from fpmon.monitor.app import MonitorApp


class LiveScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False, id="filter.clear"),
        Binding("c", "columns", "Columns", id="columns"),
    ]

    table: LiveTable

    if TYPE_CHECKING:  # for the type checker only (as Textual types `app` itself)
        app = getters.app(MonitorApp)

    def say(self, text: str) -> None:
        """Set the one-line summary: only when it changed, and without a relayout (one line,
        full width), so a repaint that changed nothing there costs nothing there."""
        if text != getattr(self, "_said", None):
            self._said = text
            self.summary.update(text, layout=False)

    def summary_bar(self) -> Static:
        # Kept by reference: a repaint racing the app's exit updates a detached widget
        # harmlessly, where a query would raise.
        self.summary = Static(id="summary")
        return self.summary

    def filter_input(self) -> Input:
        return Input(placeholder="regex filter (Enter to apply, Esc to clear)", id="filter")

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("shown")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""
        box.remove_class("shown")
        self.apply_filter("")
        self.table.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self.apply_filter(event.value)
        self.table.focus()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        self.apply_filter(event.value, quiet=True)

    def apply_filter(self, text: str, quiet: bool = False) -> None:
        err = self.table.set_filter(text)
        if err:
            if not quiet:
                self.notify(err, severity="error")
            return
        self.rebuild()

    def action_columns(self) -> None:
        from fpmon.monitor.screens.modals import ColumnsScreen

        def done(hidden: set[str] | None) -> None:
            if hidden is not None:
                self.table.hidden = hidden
                self.rebuild()

        self.app.push_screen(ColumnsScreen(self.table), done)

    def rebuild(self) -> None:
        raise NotImplementedError

    def repaint(self, full: bool = False) -> None:
        raise NotImplementedError

    def ready(self) -> bool:
        """Screens resume before their table mounts its columns: paint nothing until then."""
        table = getattr(self, "table", None)  # None until composed
        return self.is_attached and table is not None and bool(table.columns)

    def on_screen_resume(self) -> None:
        self.repaint(full=True)
