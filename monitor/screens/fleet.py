"""Fleet: one row per node, sparklines of the selected node, a one-line summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Static

from fpmon.monitor import capacity
from fpmon.monitor import format as fmt
from fpmon.monitor.model import BAD_STATUSES, CONN_SYMBOL, HEALTH_SYMBOL, NodeRow
from fpmon.monitor.screens.base import LiveScreen
from fpmon.monitor.widgets.chart import Chart
from fpmon.monitor.widgets.tables import FleetTable, setup_summary


class FleetScreen(LiveScreen):
    _detail_said = ""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "evidence", "Evidence", id="evidence"),
        Binding("h", "capacity", "Hidden work", id="capacity"),
    ]

    table: FleetTable

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.summary_bar()
        yield self.filter_input()
        self.table = FleetTable(id="fleet")
        self.table.sort_col = "node"  # stable order by name until the operator sorts
        yield self.table
        # The selected node, below the table: sized to the table (a small fleet leaves the
        # charts room, a large one the table), on a fixed 0-100% scale.
        self.detail_node = Static("", id="detail-node", markup=False)
        self.util_chart = Chart("utilisation", 100.0, _pct100, id="util-chart")
        self.mm_chart = Chart("mismatch rate (last 20 verdicts)", 1.0, _pct1, id="mm-chart")
        with Horizontal(id="detail"):
            yield self.detail_node
            with Vertical(id="charts"):
                yield self.util_chart
                yield self.mm_chart
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()

    def rows(self) -> Mapping[str, NodeRow]:
        return self.app.model.nodes  # node -> row

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
        self.say(
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
        text = detail_text(row)
        if text != self._detail_said:
            self._detail_said = text
            self.detail_node.update(text, layout=False)  # a fixed-size box
        pal = self.app.palette
        self.util_chart.show(row.util_hist, pal.get("fpmon-ok", ""))
        self.mm_chart.show(row.mismatch_hist, pal.get("fpmon-mismatch", ""))

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

    def action_capacity(self) -> None:
        """The selected node's capacity evidence: activity vs declared work, processes."""
        node = self.selected_node()
        if node is not None:
            self.app.show_capacity(node)


def _pct100(x: float) -> str:
    return f"{x:.0f}%"


def _pct1(x: float) -> str:
    return f"{x * 100:.0f}%"


def detail_text(r: NodeRow) -> str:
    """The selected node in a few lines: what it is, what it declared, what was found."""
    gpus = f"{r.gpus} × {r.gpu_names}" if r.gpus else r.gpu_names or "no telemetry yet"
    bad = sum(r.verdicts[s] for s in BAD_STATUSES)
    hidden = capacity.finding(r.capacity, r.capacity_note, r.gpus, bool(r.source))
    foreign = capacity.foreign_finding(r.procs)
    atts = ", ".join(f"{k} ×{n}" for k, n in r.attributions.most_common(3))
    return "\n".join(
        [
            f"{HEALTH_SYMBOL[r.health]} {r.node}  {r.health}",
            f"GPUs      {gpus}",
            f"declared  {setup_summary(r.declared)}",
            f"verdicts  {r.checked} judged, {bad} bad"
            + (f" ({r.last_attribution})" if r.last_attribution else ""),
            f"attrib.   {atts or '—'}",
            f"commits   {r.commits}  sampled {fmt.pct(r.sampled).strip()}",
            f"alerts    {r.open_alerts} open",
            f"hidden    {hidden.text}  foreign {foreign.text}",
        ]
    )
