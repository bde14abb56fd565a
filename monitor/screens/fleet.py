"""Fleet: one row per node, sparklines of the selected node, a one-line summary."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Header, Label, Sparkline

from fpmon.monitor.model import CONN_SYMBOL, HEALTH_SYMBOL, NodeRow
from fpmon.monitor.screens.base import LiveScreen
from fpmon.monitor.widgets.tables import FleetTable


class FleetScreen(LiveScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "evidence", "Evidence", id="evidence")
    ]

    table: FleetTable

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.summary_bar()
        yield self.filter_input()
        self.table = FleetTable(id="fleet")
        yield self.table
        self.detail_node = Label("", id="detail-node")
        self.util_spark = Sparkline([], id="util-spark")
        self.mm_spark = Sparkline([], id="mm-spark")
        with Horizontal(id="detail"):
            yield self.detail_node
            yield Label("util %", classes="spark-label")
            yield self.util_spark
            yield Label("mismatch rate", classes="spark-label")
            yield self.mm_spark
        yield Footer()

    def on_mount(self) -> None:
        self.table.sort_col = "node"  # stable order by name until the operator sorts
        self.table.focus()

    def rows(self) -> Iterable[tuple[str, NodeRow]]:
        return ((r.node, r) for r in self.app.model.nodes.values())

    def rebuild(self) -> None:
        self.table.now = self.app.model.clock()
        self.table.palette = self.app.palette
        self.table.rebuild(self.rows())

    def repaint(self, full: bool = False) -> None:
        if not self.ready():
            return
        model = self.app.model
        changed = self.app.take_dirty("fleet")
        t = self.table
        t.now = model.clock()
        t.palette = self.app.palette
        t.sync(self.rows(), None if full else changed, lazy=True)
        counts = model.node_counts()
        eps = model.endpoints
        ep_text = "  ".join(f"{CONN_SYMBOL.get(s, '?')} {e} {s}" for e, s in eps.items())
        self.summary.update(
            f"{len(model.nodes)} nodes  "
            f"{HEALTH_SYMBOL['ok']} {counts['ok']} ok  "
            f"{HEALTH_SYMBOL['flagged']} {counts['flagged']} flagged  "
            f"{HEALTH_SYMBOL['pending']} {counts['pending']} pending  "
            f"! {model.open_alerts} open alerts  │ {ep_text}"
        )
        self._detail()

    def selected_node(self) -> str | None:
        t = self.table
        if not t.row_count:
            return None
        try:
            return str(t.coordinate_to_cell_key(t.cursor_coordinate).row_key.value)
        except Exception:  # cursor outside the table while rows change
            return None

    def _detail(self) -> None:
        node = self.selected_node()
        row = self.app.model.nodes.get(node) if node else None
        if row is None:
            return
        self.detail_node.update(f"{row.node}: {row.gpu_names or '—'}")
        self.util_spark.data = list(row.util_hist)
        self.mm_spark.data = list(row.mismatch_hist)

    @on(DataTable.RowHighlighted)
    def _highlighted(self) -> None:
        self._detail()

    @on(DataTable.RowSelected)
    def _selected(self) -> None:
        self.action_evidence()

    def action_evidence(self) -> None:
        """Evidence of the selected node's latest flagged verdict (or its latest verdict)."""
        node = self.selected_node()
        if node is None:
            return
        entries = [e for e in self.app.model.verdicts if e.verdict.node == node]
        if not entries:
            self.notify(f"{node} has no verdict yet", severity="warning")
            return
        bad = [e for e in entries if e.verdict.status not in ("match", "within_noise")]
        self.app.show_evidence((bad or entries)[-1])
