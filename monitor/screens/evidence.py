"""Evidence for one verdict: declared vs replayed setup, per-layer distance vs noise band
(log scale), attribution scores, the record's metadata."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual_plotext import PlotextPlot

from fpmon.monitor.format import printable
from fpmon.monitor.model import VerdictEntry, evidence_layers
from fpmon.monitor.widgets.tables import status_text
from fpmon.setups import NUMERIC_FIELDS
from fpmon.wire import Candidate, Verdict


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
        status = v.evidence.attribution_status
        how = f" ({status})" if status else ""
        yield Static(
            f"{v.node}  seq {v.seq}  {status_text(v.status)}  "
            f"attribution: {', '.join(self.entry.attribution) or '—'}{how}",
            id="summary",
            markup=False,  # node names and values come from the wire: text, never markup
        )
        with Horizontal(id="top"):
            yield DataTable(id="setup", cursor_type="none", zebra_stripes=True)
            yield PlotextPlot(id="plot")
        with Horizontal(id="bottom"):
            yield DataTable(id="attribution", cursor_type="row")
            yield Static(self._meta(), id="meta", markup=False)
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
            setup.add_row(_plain(f), _plain(a), _plain(b), "≠ differs" if a != b else "")
        att = self.query_one("#attribution", DataTable)
        att.add_columns("rank", "candidate", "score")
        for i, cand in enumerate(v.attribution[:20]):
            score = cand.score if cand.score is not None else cand.error or "—"
            att.add_row(str(i + 1), _plain(_candidate_text(cand)), _plain(_score(score)))
        if not v.attribution:
            att.add_row("—", _plain(no_attribution_text(v)), "")
        self._plot()

    def _plot(self) -> None:
        plot = evidence_plot(self.entry.verdict)
        plt = self.query_one("#plot", PlotextPlot).plt
        plt.title(plot.title)
        if not plot.xs:
            return
        # Points, not a line: probes are categories (layers, hidden state, logits), and a line
        # between them would suggest values in between. Drawn on log10 of the distance, with
        # decade labels (plotext's own log axis printed 0.00000000000100000).
        pts = list(zip(plot.xs, plot.ys, plot.zero, strict=True))
        above = [(x, y) for x, y, zero in pts if not zero]
        if above:
            plt.scatter([x for x, _ in above], [y for _, y in above], marker="●", label="distance")
        zeros = [x for x, _, zero in pts if zero]
        if zeros:
            plt.scatter(zeros, [plot.floor] * len(zeros), marker="○", label="0: bit-identical")
        if plot.band:
            plt.plot(plot.xs, plot.band, marker="braille", label="noise band")
        plt.ylim(plot.floor - 0.4, plot.top + 0.4)
        plt.yticks(plot.yticks, plot.ylabels)
        plt.xlim(0.5, len(plot.xs) + 0.5)
        plt.xticks(plot.xs, plot.names)
        plt.xlabel("probe (input to output)")

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
                *([f"attribution   {note}"] if (note := v.evidence.attribution_note) else []),
            ]
        )


@dataclass
class EvidencePlot:
    """What the evidence chart draws, in log10 units (computed apart, so it can be tested)."""

    title: str
    names: list[str] = field(default_factory=list)
    xs: list[float] = field(default_factory=list)  # whole numbers; plotext's ticks take floats
    ys: list[float] = field(default_factory=list)  # log10(distance); the floor for 0
    zero: list[bool] = field(default_factory=list)  # distance exactly 0 (bit-identical)
    band: list[float] = field(default_factory=list)  # log10(noise band), when there is one
    floor: float = -12.0
    top: float = 0.0
    yticks: list[float] = field(default_factory=list)  # whole decades, as xs
    ylabels: list[str] = field(default_factory=list)


def probe_name(probe: str) -> str:
    """Short x labels: keys.L3 -> L3, logits.topk.ids -> top-k ids, hidden.final -> final."""
    return probe.replace("keys.", "").replace("logits.topk.", "top-k ").replace("hidden.", "")


def evidence_plot(v: Verdict) -> EvidencePlot:
    layers = evidence_layers(v)
    if not layers:
        return EvidencePlot("no per-probe distances in this verdict")
    bands = [b for *_, b in layers if b]
    positive = [d for _, d, _ in layers if d > 0] + bands
    if positive:
        lo = math.floor(math.log10(min(positive)))
        hi = math.ceil(math.log10(max(positive)))
    else:
        lo = hi = -6  # every probe bit-identical: only the zero row
    floor = lo - 1  # zero sits one decade below the smallest value, labelled 0
    hi = max(hi, lo)
    step = max(1, math.ceil((hi - lo + 1) / 6))  # at most ~7 labels
    ticks: list[float] = [floor, *range(lo, hi + 1, step)]
    if bands:
        title = "per-probe distance vs noise band (log scale; above the band: differs)"
    else:
        title = "per-probe distance (log scale); bit-exact replay, no noise band: above 0 differs"
    return EvidencePlot(
        title=title,
        names=[probe_name(n) for n, _, _ in layers],
        xs=list(range(1, len(layers) + 1)),
        ys=[math.log10(d) if d > 0 else floor for _, d, _ in layers],
        zero=[d <= 0 for _, d, _ in layers],
        band=[math.log10(b) if b else floor for *_, b in layers] if bands else [],
        floor=floor,
        top=hi,
        yticks=ticks,
        ylabels=["0" if k == floor else f"1e{k}" for k in ticks],
    )


def no_attribution_text(v: Verdict) -> str:
    """What the attribution table says when the verdict lists no candidate: on a mismatch the
    verifier's stated reason (budget, candidates shed, tokens, ...), never a generic line."""
    if v.status != "mismatch":
        return "no attribution (only mismatches are attributed)"
    if v.evidence.attribution_note:
        return v.evidence.attribution_note
    if v.evidence.attribution_status:
        return f"not attributed ({v.evidence.attribution_status})"
    return "not attributed, and the verifier gave no reason (an older verifier)"


def _candidate_text(cand: Candidate) -> str:
    exact = " (exact)" if cand.exact else ""
    return " ".join(f"{k}={x}" for k, x in cand.changes.items()) + exact


def _score(x: Any) -> str:
    if isinstance(x, int | float) and not isinstance(x, bool):
        return "0" if x == 0 else f"{x:.3g}" if math.isfinite(x) else str(x)
    return str(x)


def _plain(value: object) -> Text:
    # DataTable reads a str cell as Rich markup: a node's "[/]" in a setup value would raise.
    return Text(printable(str(value)))
