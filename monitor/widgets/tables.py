"""The three live tables: fleet (one row per node), verdict feed, alerts."""

from __future__ import annotations

import time
from typing import Any

from fpmon.monitor import capacity
from fpmon.monitor import format as fmt
from fpmon.monitor.model import (
    CONN_SYMBOL,
    HEALTH_SYMBOL,
    STATUS_SYMBOL,
    AlertEntry,
    NodeRow,
    VerdictEntry,
)
from fpmon.monitor.widgets.live_table import Column, LiveTable, cell

HEALTH_VAR = {
    "ok": "fpmon-ok",
    "flagged": "fpmon-mismatch",
    "alert": "fpmon-alert",
    "unverifiable": "fpmon-alert",
    "pending": "fpmon-stale",
}
CONN_VAR = {"live": "fpmon-ok", "stale": "fpmon-stale", "lost": "fpmon-mismatch"}
STATUS_VAR = {
    "match": "fpmon-ok",
    "within_noise": "fpmon-ok",
    "mismatch": "fpmon-mismatch",
    "bad_opening": "fpmon-mismatch",
    "chain_break": "fpmon-mismatch",
    "covert_rows": "fpmon-mismatch",
    "unopened": "fpmon-alert",
    "unverifiable": "fpmon-alert",
}
SEVERITY_VAR = {"critical": "fpmon-mismatch", "warning": "fpmon-alert", "info": "fpmon-stale"}


def status_text(status: str) -> str:
    return f"{STATUS_SYMBOL.get(status, '·')} {status}"


class FleetTable(LiveTable):
    COLUMNS = (
        Column("health", "Status", 10),
        Column("node", "Node", 14),
        Column("attribution", "Attribution", 16),
        Column("hidden", "Hidden work", 14),
        Column("foreign", "Foreign", 7),
        Column("conn", "Conn", 7),
        Column("gpus", "GPUs", 4),
        Column("util", "Util", 6),
        Column("util_spark", "Util hist", 10),
        Column("mem", "Memory", 10),
        Column("power", "Power W", 7),
        Column("rate", "Commit/s", 8),
        Column("sampled", "Sampled", 7),
        Column("verified", "Verified", 8),
        Column("verdicts", "Verdicts ✓/✗", 12),
        Column("mm_spark", "Mismatch", 10),
        Column("last", "Last", 5),
        Column("alerts", "Alerts", 6),
        Column("declared", "Declared setup", 30, visible=False),
    )

    now: float = 0.0

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        # node -> (the inputs, the findings): see `_hidden_work`
        self._findings: dict[
            str, tuple[tuple[Any, ...], tuple[capacity.Finding, capacity.Finding]]
        ] = {}

    def search_text(self, r: NodeRow) -> str:
        hidden = self._hidden_work(r)[0].text
        return f"{r.node} {r.health} {r.connection} {r.last_attribution} {r.gpu_names} {hidden}"

    def cells(self, r: NodeRow) -> dict[str, Any]:
        good = r.verdicts["match"] + r.verdicts["within_noise"]
        bad = r.checked - good - r.verdicts["unverifiable"]
        last = None if r.last_verdict_t is None else max(0.0, self.now - r.last_verdict_t)
        declared = r.declared
        health = r.health
        hidden, foreign = self._hidden_work(r)
        return {
            "health": cell(
                f"{HEALTH_SYMBOL[health]} {health.upper()}",
                self.style(HEALTH_VAR[health]),
                ["ok", "pending", "unverifiable", "alert", "flagged"].index(health),
            ),
            "node": cell(r.node, "bold"),
            "hidden": cell(
                hidden.text,
                self.style("fpmon-mismatch") if hidden.flagged else "",
                hidden.sort,
                hidden.tip,
            ),
            "foreign": cell(
                foreign.text,
                self.style("fpmon-alert") if foreign.flagged else "",
                foreign.sort,
                foreign.tip,
            ),
            "conn": cell(
                f"{CONN_SYMBOL[r.connection]} {r.connection}", self.style(CONN_VAR[r.connection])
            ),
            "gpus": cell(str(r.gpus) if r.source != "host" else "cpu", "", r.gpus),
            "util": cell(fmt.pct(r.util, 1.0), "", r.util),
            "util_spark": cell(fmt.spark(r.util_hist, 10, 100.0), self.style("fpmon-ok")),
            "mem": cell(fmt.gib(r.mem_used, r.mem_total), "", r.mem_used),
            "power": cell(fmt.num(r.power, "{:.0f}"), "", r.power),
            "rate": cell(fmt.num(r.commits_per_s), "", r.commits_per_s),
            "sampled": cell(fmt.pct(r.sampled), "", r.sampled),
            "verified": cell(fmt.pct(r.verified), "", r.verified),
            "verdicts": cell(f"✓{good} ✗{bad}", self.style("fpmon-mismatch") if bad else "", bad),
            "mm_spark": cell(fmt.spark(r.mismatch_hist, 10, 1.0), self.style("fpmon-mismatch")),
            "attribution": cell(
                r.last_attribution or "—",
                self.style("fpmon-mismatch") if r.last_attribution else "",
            ),
            "last": cell(fmt.age(last), "", last),
            "alerts": cell(
                str(r.open_alerts) if r.open_alerts else "",
                self.style("fpmon-alert"),
                r.open_alerts,
            ),
            "declared": cell(setup_summary(declared)),
        }

    def _hidden_work(self, r: NodeRow) -> tuple[capacity.Finding, capacity.Finding]:
        """The node's hidden-work findings, made again only when their inputs changed: the
        tip spells out every metric (~0.15 ms), and every visible row is asked each repaint."""
        key = (r.capacity, r.procs, r.capacity_note, r.gpus, bool(r.source))
        hit = self._findings.get(r.node)
        if (
            hit is None
            or hit[0][0] is not key[0]
            or hit[0][1] is not key[1]
            or hit[0][2:] != key[2:]
        ):
            found = (
                capacity.finding(r.capacity, r.capacity_note, r.gpus, bool(r.source)),
                capacity.foreign_finding(r.procs),
            )
            hit = self._findings[r.node] = (key, found)
        return hit[1]


def setup_summary(s: dict[str, Any]) -> str:
    if not s:
        return "—"
    return (
        f"{s.get('engine', '?')} {s.get('dtype', '?')} {s.get('attn_impl', '?')} "
        f"bs{s.get('batch_size', '?')}{' compiled' if s.get('compiled') else ''}"
    )


class VerdictTable(LiveTable):
    COLUMNS = (
        Column("time", "Time", 8),
        Column("node", "Node", 14),
        Column("seq", "Seq", 7),
        Column("status", "Status", 14),
        Column("attribution", "Attribution", 18),
        Column("replay", "Replay s", 8),
        Column("reference", "Reference", 10),
        Column("reason", "Reason", 30, flex=True),
    )

    def search_text(self, e: VerdictEntry) -> str:
        v = e.verdict
        return f"{v.node} {v.status} {','.join(e.attribution)} {v.reason}"

    def cells(self, e: VerdictEntry) -> dict[str, Any]:
        v = e.verdict
        return {
            "time": cell(time.strftime("%H:%M:%S", time.localtime(v.t)), "", v.t),
            "node": cell(v.node, "bold"),
            "seq": cell(str(v.seq), "", v.seq),
            "status": cell(status_text(v.status), self.style(STATUS_VAR.get(v.status, ""))),
            "attribution": cell(",".join(e.attribution) or "—"),
            "replay": cell(f"{v.replay_s:.3f}", "", v.replay_s),
            "reference": cell(v.reference + (" x-gpu" if v.cross_gpu else "")),
            "reason": cell(fmt.one_line(v.reason)),
        }


class AlertTable(LiveTable):
    """One row per node and kind (`model.AlertEntry`): how many, since when, the latest."""

    COLUMNS = (
        Column("state", "State", 7),
        Column("severity", "Severity", 8),
        Column("kind", "Kind", 21),
        Column("node", "Node", 14),
        Column("count", "Count", 6),
        Column("first", "First seen", 14),
        Column("last", "Last seen", 14),
        Column("seq", "Seq", 6),
        Column("message", "Latest evidence", 40, flex=True),
    )

    def search_text(self, e: AlertEntry) -> str:
        a = e.alert
        return f"{a.node} {a.kind} {e.severity} {a.message} {'acked' if e.acked else 'open'}"

    def cells(self, e: AlertEntry) -> dict[str, Any]:
        a = e.alert
        return {
            "state": cell(
                "✓ acked" if e.acked else "! OPEN",
                self.style("fpmon-stale" if e.acked else "fpmon-alert"),
                e.acked,
            ),
            "severity": cell(e.severity, self.style(SEVERITY_VAR.get(e.severity, ""))),
            "kind": cell(a.kind),
            "node": cell(a.node, "bold"),
            "count": cell(str(e.count), "", e.count),
            "first": cell(fmt.clock(e.first_t), "", e.first_t),
            "last": cell(fmt.clock(e.last_t), "", e.last_t),
            "seq": cell(str(a.seq) if a.seq >= 0 else "", "", a.seq),
            "message": cell(fmt.one_line(a.message)),
        }
