"""Verdicts: the live feed, filterable by node/status (regex) and time, pausable, exportable."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import DataTable, Footer, Header

from fpmon.monitor.format import jsonable
from fpmon.monitor.model import VerdictEntry
from fpmon.monitor.screens.base import LiveScreen
from fpmon.monitor.widgets.tables import VerdictTable

WINDOWS = (None, 60.0, 300.0, 900.0, 3600.0)  # the time filter cycles through these
MAX_ROWS = 2000  # rows painted; the model keeps its own bounded feed for catch-up and export


class VerdictsScreen(LiveScreen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause", id="verdicts.pause"),
        Binding("w", "window", "Time window", id="verdicts.window"),
        Binding("x", "export", "Export", id="verdicts.export"),
        Binding("enter", "evidence", "Evidence", id="verdicts.evidence"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.paused = False
        self.window: float | None = None
        self.last_n = 0  # newest verdict painted
        self.entries: dict[str, VerdictEntry] = {}

    def compose(self) -> ComposeResult:
        yield Header()
        yield self.summary_bar()
        yield self.filter_input()
        self.table = VerdictTable(id="verdicts")
        yield self.table
        yield Footer()

    def on_mount(self) -> None:
        self.table.focus()

    def _in_window(self, e: VerdictEntry, now: float) -> bool:
        return self.window is None or now - e.verdict.t <= self.window

    def _new(self) -> list[VerdictEntry]:
        out = []
        for e in reversed(self.app.model.verdicts):
            if e.n <= self.last_n:
                break
            out.append(e)
        out.reverse()
        return out

    def rebuild(self) -> None:
        self.entries.clear()
        self.last_n = 0
        self.table.palette = self.app.palette
        self.table.rebuild([])
        self.repaint(full=True)

    def repaint(self, full: bool = False) -> None:
        if not self.ready():
            return
        model = self.app.model
        waiting = model.verdicts_total - self.last_n
        if not self.paused:
            now = time.time()
            arrived = self._new()
            if arrived:
                self.last_n = arrived[-1].n
            new = [e for e in arrived if self._in_window(e, now)]
            self.table.palette = self.app.palette
            for e in new:
                self.entries[str(e.n)] = e
            self.table.sync(((str(e.n), e) for e in new), None, limit=MAX_ROWS)
            self._drop_old(now)
            if new and self.table.cursor_row >= self.table.row_count - len(new) - 1:
                self.table.move_cursor(row=self.table.row_count - 1)  # follow the feed
            waiting = 0
        oldest = model.verdicts[0].n if model.verdicts else 0
        lost = max(0, oldest - self.last_n - 1) if self.paused and self.last_n else 0
        win = "all time" if self.window is None else f"last {self.window / 60:g} min"
        state = (
            f"PAUSED — {waiting} new waiting" + (f", {lost} beyond the buffer" if lost else "")
            if self.paused
            else "live"
        )
        self.say(
            f"{len(self.table._shown)} shown  │ {state}  │ window: {win}  │ "
            f"{model.verdicts_total} received"
        )

    def _drop_old(self, now: float) -> None:
        if self.window is None:
            return
        for key in list(self.table._shown):
            e = self.entries.get(key)
            if e is None or self._in_window(e, now):
                break  # rows are in arrival order: the rest are newer
            self.table.remove_row(key)
            del self.table._shown[key]
            del self.entries[key]

    def action_pause(self) -> None:
        self.paused = not self.paused
        self.notify("verdict feed paused (nothing is lost)" if self.paused else "resumed")
        self.repaint()

    def action_window(self) -> None:
        self.window = WINDOWS[(WINDOWS.index(self.window) + 1) % len(WINDOWS)]
        self.rebuild()

    def shown_entries(self) -> list[VerdictEntry]:
        return [self.entries[k] for k in self.table._shown if k in self.entries]

    def action_export(self) -> None:
        entries = self.shown_entries()
        try:
            path = export_verdicts(entries, Path(self.app.export_dir))
        except OSError as e:
            self.notify(f"export failed: {e}", severity="error", timeout=15)
            return
        self.notify(
            f"exported {len(entries)} verdicts to {path}.csv and {path.name}.json", timeout=15
        )

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # Read-only inspector mode writes nothing.
        return not (action == "export" and self.app.inspector)

    @on(DataTable.RowSelected)
    def _selected(self, event: DataTable.RowSelected) -> None:
        e = self.entries.get(str(event.row_key.value))
        if e is not None:
            self.app.show_evidence(e)

    def action_evidence(self) -> None:
        t = self.table
        if t.row_count:
            key = t.coordinate_to_cell_key(t.cursor_coordinate).row_key
            e = self.entries.get(str(key.value))
            if e is not None:
                self.app.show_evidence(e)


EXPORT_FIELDS = (
    "t", "node", "seq", "status", "attribution", "request_id", "replay_s", "reference",
    "cross_gpu", "reason",
)  # fmt: skip


def verdict_row(e: VerdictEntry) -> dict:
    v = e.verdict
    return {
        "t": v.t,
        "node": v.node,
        "seq": v.seq,
        "status": v.status,
        "attribution": ",".join(e.attribution),
        "request_id": v.request_id,
        "replay_s": v.replay_s,
        "reference": v.reference,
        "cross_gpu": v.cross_gpu,
        "reason": v.reason,
    }


def export_verdicts(entries: list[VerdictEntry], folder: Path) -> Path:
    """Write the view to `<folder>/fpmon-verdicts-<time>.csv` and `.json`; returns the stem."""
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    stem = base = folder / time.strftime("fpmon-verdicts-%Y%m%d-%H%M%S")
    n = 1
    while Path(f"{stem}.csv").exists():  # two exports in one second: keep both
        n += 1
        stem = Path(f"{base}-{n}")
    rows = [verdict_row(e) for e in entries]
    with open(f"{stem}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=EXPORT_FIELDS)
        w.writeheader()
        w.writerows(rows)
    full = [{**e.verdict.to_map(), "attribution_fields": e.attribution} for e in entries]
    Path(f"{stem}.json").write_text(json.dumps(full, indent=1, default=jsonable))
    return stem
