"""Evidence for one verdict: declared vs replayed setup, per-layer distance vs noise band
(log scale), attribution scores, the record's metadata."""

from __future__ import annotations

import math
import time
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from fpmon.monitor.model import VerdictEntry, evidence_layers
from fpmon.monitor.widgets.tables import status_text
from fpmon.setups import NUMERIC_FIELDS
from fpmon.wire import Candidate


def replayed_setup(e: VerdictEntry) -> dict[str, Any]:
    """The setup the verifier's best candidate ran (declared, changed where attributed)."""
    v = e.verdict
    if not v.attribution:
        return dict(v.declared)
    return {**v.declared, **v.attribution[0].changes}


class EvidenceScreen(Screen):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "app.pop_screen", "Back", id="evidence.back")
    ]

    def __init__(self, entry: VerdictEntry) -> None:
        super().__init__()
        self.entry = entry

    def compose(self) -> ComposeResult:
        v = self.entry.verdict
        yield Header()
        yield Static(
            f"{v.node}  seq {v.seq}  {status_text(v.status)}  "
            f"attribution: {', '.join(self.entry.attribution) or '—'}",
            id="summary",
        )
        with Horizontal(id="top"):
            yield DataTable(id="setup", cursor_type="none", zebra_stripes=True)
            yield PlotextPlot(id="plot")
        with Horizontal(id="bottom"):
            yield DataTable(id="attribution", cursor_type="row")
            yield Static(self._meta(), id="meta")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = "evidence"
        v = self.entry.verdict
        replayed = replayed_setup(self.entry)
        setup = self.query_one("#setup", DataTable)
        setup.add_columns("field", "declared", "best candidate", "")
        fields = [f for f in NUMERIC_FIELDS if f in v.declared or f in replayed]
        for f in fields:
            a, b = v.declared.get(f, "—"), replayed.get(f, "—")
            setup.add_row(f, str(a), str(b), "≠ differs" if a != b else "")
        att = self.query_one("#attribution", DataTable)
        att.add_columns("rank", "candidate", "score")
        for i, cand in enumerate(v.attribution[:20]):
            score = cand.score if cand.score is not None else cand.error or "—"
            att.add_row(str(i + 1), _candidate_text(cand), _score(score))
        if not v.attribution:
            att.add_row("—", "no attribution (only mismatches are attributed)", "")
        self._plot()

    def _plot(self) -> None:
        layers = evidence_layers(self.entry.verdict)
        widget = self.query_one("#plot", PlotextPlot)
        plt = widget.plt
        plt.title("per-layer distance vs noise band (log)")
        if not layers:
            plt.title("no per-layer distances in this verdict")
            return
        # log scale: zero distances (bit-identical layers) sit on a floor below every value.
        positive = [d for _, d, _ in layers if d > 0] + [b for *_, b in layers if b]
        floor = min(positive) / 10 if positive else 1e-12
        xs: list[float] = list(range(1, len(layers) + 1))  # plotext's xticks takes floats
        # Points, not a line: probes are categories (layers, hidden state, logits), and a line
        # between them would suggest values in between.
        plt.scatter(xs, [max(d, floor) for _, d, _ in layers], marker="dot", label="distance")
        bands = [b for *_, b in layers]
        if any(b is not None for b in bands):
            plt.plot(xs, [max(b or floor, floor) for b in bands], label="noise band")
        plt.yscale("log")
        plt.xticks(xs, [n.replace("keys.", "") for n, _, _ in layers])
        plt.xlabel("probe")

    def _meta(self) -> str:
        e = self.entry
        v = e.verdict
        return "\n".join(
            [
                f"node          {v.node}",
                f"seq           {v.seq}",
                f"request       {v.request_id or '—'}",
                f"status        {v.status}",
                f"judged at     {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(v.t))}",
                f"replay        {v.replay_s:.3f} s on {v.reference or '—'}",
                f"cross-GPU     {'yes (noise band applies)' if v.cross_gpu else 'no (bit-exact)'}",
                f"reason        {v.reason or '—'}",
            ]
        )


def _candidate_text(cand: Candidate) -> str:
    exact = " (exact)" if cand.exact else ""
    return " ".join(f"{k}={x}" for k, x in cand.changes.items()) + exact


def _score(x: Any) -> str:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return "0" if x == 0 else f"{x:.3g}" if math.isfinite(x) else str(x)
    return str(x)
