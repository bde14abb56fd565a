"""Capacity evidence for one node: what its GPUs did against what its committed tokens explain,
per metric over time, the processes on its GPUs that are not its engine's, and its hidden-work
alerts. Everything comes from the model (monitor/capacity.py); it repaints when the node's
figures change (a new accounting window, telemetry, an alert). The plot follows the metric
under the table's cursor (the worst one at first)."""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from fpmon.monitor import capacity
from fpmon.monitor import format as fmt
from fpmon.monitor.capacity import ratio_text
from fpmon.monitor.format import printable
from fpmon.monitor.model import NodeRow

if TYPE_CHECKING:
    from textual import getters

    from fpmon.monitor.app import MonitorApp


def _t(text: str, style: str = "") -> Text:
    """A cell from wire text: never read as markup, no control characters."""
    return Text(fmt.one_line(printable(text)), style=style)


def _gb(b: float | None) -> str:
    return "—" if b is None else f"{b / 1e9:.2f} GB"


class CapacityScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="capacity.back")
    ]

    if TYPE_CHECKING:  # for the type checker only (as Textual types `app` itself)
        app = getters.app(MonitorApp)

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node
        self._painted: tuple[object, ...] | None = None
        self.metric = ""  # the metric plotted: the one under the table's cursor

    def compose(self) -> ComposeResult:
        yield Header()
        self.head = Static("", id="cap-head", markup=False)
        yield self.head
        with Horizontal(id="cap-top"):
            with Vertical(id="cap-left"):
                yield DataTable(id="cap-metrics", cursor_type="row", zebra_stripes=True)
                yield Static("", id="cap-metric-note", markup=False)
            yield PlotextPlot(id="cap-plot")
        with Horizontal(id="cap-bottom"):
            with Vertical():
                yield Static("Foreign processes (last telemetry)", classes="cap-label")
                yield DataTable(id="cap-procs", cursor_type="row", zebra_stripes=True)
            with Vertical():
                yield Static("Hidden-work alerts, newest first", classes="cap-label")
                yield DataTable(id="cap-alerts", cursor_type="row", zebra_stripes=True)
        self.challenges = Static("", id="cap-challenges", markup=False)
        yield self.challenges
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"capacity: {self.node}"
        self.query_one("#cap-metrics", DataTable).add_columns(
            "metric", "observed s", "explained s", "ratio", "threshold", "verdict",
            "ratio per window", "explained by",
        )  # fmt: skip
        self.query_one("#cap-procs", DataTable).add_columns("GPU", "pid", "name", "memory")
        self.query_one("#cap-alerts", DataTable).add_columns("time", "kind", "severity", "message")
        self.repaint()
        self.query_one("#cap-metrics", DataTable).focus()

    def row(self) -> NodeRow | None:
        return self.app.model.nodes.get(self.node)

    def repaint(self) -> None:
        """Rebuild what changed: the tables are a few dozen rows at most."""
        if not self.is_mounted:
            return
        row = self.row()
        key = (id(row), row.capacity_version if row else -1, self.app.theme)
        if key == self._painted:
            return
        self._painted = key
        self._head(row)
        self._metrics(row)
        self._chosen(row)
        self._procs(row)
        self._alerts(row)
        self.challenges.update(capacity.challenge_line(row.challenges if row else None))

    def _head(self, row: NodeRow | None) -> None:
        if row is None:
            self.head.update(f"{self.node}: not in the fleet view (playback went back?)")
            return
        hidden = capacity.finding(row.capacity, row.capacity_note, row.gpus, bool(row.source))
        foreign = capacity.foreign_finding(row.procs)
        w = row.capacity
        lines = [
            f"{self.node}  hidden work: {hidden.text}  │ foreign processes: {foreign.text}  │ "
            + (capacity.window_line(w) if w else "no accounting window yet"),
            f"thresholds: {w.threshold_source or '—'}" if w else hidden.tip or "—",
        ]
        self.head.update("\n".join(printable(x) for x in lines))

    def _metrics(self, row: NodeRow | None) -> None:
        t = self.query_one("#cap-metrics", DataTable)
        t.clear()
        w = row.capacity if row else None
        if w is None:
            return
        if not self.metric:
            worst = capacity.worst(w)
            self.metric = worst.metric if worst else ""
        bad = self.app.palette.get("fpmon-mismatch", "")
        hist = row.capacity_hist if row else None
        for m in w.metrics:
            r = capacity.ratio(m)
            spark = ""
            if hist is not None and m.metric in hist.observed:
                spark = capacity.ratio_spark(hist.ratios(m.metric), 16)
            t.add_row(
                _t(capacity.short(m.metric)),
                Text(f"{m.observed_s:.3g}"),
                Text(f"{m.explained_s:.3g}"),
                Text(ratio_text(r), style=bad if m.over else ""),
                Text(f"{m.threshold:g}x"),
                Text("! OVER" if m.over else "within", style=bad if m.over else ""),
                Text(spark),
                _t(m.explained_by),
                key=m.metric,
            )
        for metric, why in sorted(w.not_judged.items()):
            t.add_row(_t(capacity.short(metric)), *(Text("—") for _ in range(5)), Text(""),
                      _t(f"not judged: {why}"), key=metric)  # fmt: skip
        if self.metric in t.rows:
            t.move_cursor(row=t.get_row_index(self.metric), animate=False)

    @on(DataTable.RowHighlighted, "#cap-metrics")
    def _metric_highlighted(self, event: DataTable.RowHighlighted) -> None:
        metric = str(event.row_key.value)
        if metric != self.metric:
            self.metric = metric
            self._chosen(self.row())

    def _chosen(self, row: NodeRow | None) -> None:
        """The metric under the cursor: its figures in words, and over time in the plot."""
        w = row.capacity if row else None
        note = self.query_one("#cap-metric-note", Static)
        m = next((x for x in w.metrics if x.metric == self.metric), None) if w else None
        if m is not None:
            lines = [
                f"{capacity.metric_line(m)}; floor {m.floor_s:.3g} s",
                f"explained by: {m.explained_by or '—'}",
            ]
            note.update("\n".join(printable(x) for x in lines))
        elif w is not None and self.metric in w.not_judged:
            note.update(printable(f"{self.metric}: not judged: {w.not_judged[self.metric]}"))
        else:
            note.update("")
        self._plot(row)

    def _plot(self, row: NodeRow | None) -> None:
        widget = self.query_one("#cap-plot", PlotextPlot)
        plt = widget.plt
        plt.clear_data()
        hist = row.capacity_hist if row else None
        name = capacity.short(self.metric)
        if hist is None or self.metric not in hist.observed:
            plt.title(f"{name or 'activity'}: no judged window yet")
            widget.refresh()
            return
        ends = list(hist.end_t)
        last = ends[-1]
        xs = [(e - last) / 60.0 for e in ends]  # minutes before the latest window's end
        w = row.capacity if row else None
        m = next((x for x in w.metrics if x.metric == self.metric), None) if w else None
        threshold = m.threshold if m else None
        series = [
            ("observed", list(hist.observed[self.metric])),
            ("explained", list(hist.explained[self.metric])),
        ]
        if threshold is not None:
            series.append((f"explained x {threshold:g}", [e * threshold for e in series[1][1]]))
        plt.title(f"{name}: observed vs explained, s per window")
        for label, ys in series:
            pts = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(y)]
            if pts:
                plt.plot([x for x, _ in pts], [y for _, y in pts], label=label,
                         marker="hd" if label == "observed" else "braille")  # fmt: skip
        plt.xlim(min(xs) - 0.5 if len(xs) > 1 else -1.0, 0.5)
        plt.xlabel("minutes before the latest window's end")
        widget.refresh()

    def _procs(self, row: NodeRow | None) -> None:
        t = self.query_one("#cap-procs", DataTable)
        t.clear()
        p = row.procs if row else None
        if p is None:
            t.add_row(Text("—"), Text(""), Text("the node's telemetry lists no GPU processes"),
                      Text(""))  # fmt: skip
            return
        for x in p.listed:
            name = x.name if x.name is not None else "(name not visible)"
            t.add_row(Text(str(x.gpu)), Text(str(x.pid)), _t(name), Text(_gb(x.used_memory)))
        if p.foreign > len(p.listed):
            t.add_row(Text("…"), Text(""), Text(f"{p.foreign - len(p.listed)} more"), Text(""))
        if not p.foreign:
            t.add_row(Text("—"), Text(""), Text(f"none ({p.engine} engine process(es))"),
                      Text(""))  # fmt: skip

    def _alerts(self, row: NodeRow | None) -> None:
        t = self.query_one("#cap-alerts", DataTable)
        t.clear()
        alerts = list(row.hidden_alerts or ()) if row else []
        for a in reversed(alerts):
            t.add_row(
                Text(time.strftime("%H:%M:%S", time.localtime(a.t))),
                Text(a.kind),
                Text(a.severity),
                _t(a.message),
            )
        if not alerts:
            t.add_row(Text("—"), Text(""), Text(""), Text("no hidden-work alert for this node"))
