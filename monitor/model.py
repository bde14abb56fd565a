"""The monitor's state: a plain model of the fleet with no Textual import (nvitop's api vs tui).

Everything the dashboard shows is derived from here, so the same model serves the UI, the
headless `snapshot --json`, the demo's summary and the benchmark. Decoded `fpmon.wire`
messages go in through `apply`; the UI reads rows, feeds and alerts out and asks `take_dirty`
which nodes changed since it last painted. Every buffer is bounded.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from fpmon.config import Positive, PositiveFloat, Section
from fpmon.monitor import capacity
from fpmon.monitor.capacity import CapacityHistory, Processes
from fpmon.monitor.history import History, Ring
from fpmon.wire import (
    Alert,
    CapacityWindow,
    ChallengeSummary,
    Commit,
    Head,
    Message,
    NodeSummary,
    StateReply,
    Telemetry,
    Verdict,
)
from fpmon.wire.messages import Status

# Verdict statuses that clear a record and those that flag it (DESIGN.md).
GOOD_STATUSES = frozenset({"match", "within_noise"})
BAD_STATUSES = frozenset({"mismatch", "bad_opening", "chain_break", "unopened", "covert_rows"})

# Node health, worst last. Every status has a word and a symbol, never colour alone.
HEALTH_SYMBOL = {
    "ok": "✓",
    "pending": "…",
    "unverifiable": "?",
    "alert": "!",
    "flagged": "✗",
}
RATE_WINDOW = 10  # ticks over which commits/s is measured
# Alert ids remembered to drop repeats: a repeat comes from the state snapshot (the daemon's
# latest 100 alerts) overlapping the live feed, so the last thousand or so are enough.
ALERT_IDS_KEPT = 1024

CONN_SYMBOL = {"live": "●", "stale": "◐", "lost": "○", "connecting": "◌", "deaf": "⊘"}
STATUS_SYMBOL = {
    "match": "✓",
    "within_noise": "≈",
    "mismatch": "✗",
    "unopened": "∅",
    "bad_opening": "≠",
    "covert_rows": "+",
    "chain_break": "#",
    "unverifiable": "?",
}


class Limits(Section):
    """Sizes of every buffer: memory stays flat however long the monitor runs. The config's
    `[limits]` table."""

    max_verdicts: Positive = 5000  # verdict feed kept for the Verdicts screen and export
    max_alerts: Positive = 2000
    history: Positive = 120  # sparkline points per node (one per tick)
    recent: Positive = 20  # a node's last verdicts that decide its health
    max_nodes: Positive = 20000  # a hostile feed cannot grow the fleet table without bound
    stale_after_s: PositiveFloat = 5.0  # no message for this long: stale
    lost_after_s: PositiveFloat = 20.0  # ... and for this long: lost
    capacity_windows: Positive = 60  # the verifier's accounting windows kept per node


@dataclass
class VerdictEntry:
    """One received verdict, with its receive time; the evidence screen reads it whole."""

    verdict: Verdict
    received: float
    key: tuple[str, int, str, float]
    n: int = 0  # arrival number: a stable row key

    @property
    def attribution(self) -> list[str]:
        return attribution_fields(self.verdict)


SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


def alert_key(a: Alert) -> str:
    """The group an alert joins: one per node and kind (`kind:node`, as the daemon's ids)."""
    return f"{a.kind}:{a.node}"


@dataclass
class AlertEntry:
    """A node's alerts of one kind, grouped: a flood of them stays one row per node and kind.

    The replay daemon raises one alert per bad verdict (each with its own id); an inspector
    needs to know which nodes misbehave how, how often and since when, and the latest
    evidence, not 600 rows that say the same thing."""

    alert: Alert  # the latest one: its message, seq and details are the evidence shown
    first: float  # receive times (the model's clock)
    last: float
    count: int = 1  # distinct alerts (by id) in the group
    acked: bool = False  # acknowledged; the next alert of the group opens it again
    first_t: float = 0.0  # the verifier's wall time of the earliest and latest alert
    last_t: float = 0.0
    severity: str = "info"  # the worst seen in the group

    @property
    def key(self) -> str:
        return alert_key(self.alert)


@dataclass
class NodeRow:
    node: str
    gpus: int = 0
    gpu_names: str = ""
    source: str = ""  # "nvml", "host" or "" (no telemetry yet)
    util: float | None = None  # mean GPU utilisation %, or host CPU % when no GPU
    mem_used: float | None = None  # bytes over all GPUs (or the host's memory)
    mem_total: float | None = None
    power: float | None = None  # W over all GPUs
    commits: int = 0
    last_seq: int = -1
    commits_per_s: float = 0.0
    heads: int = 0
    verdicts: Counter = field(default_factory=Counter)
    recent: Ring = field(default_factory=lambda: Ring(1))  # statuses, oldest first
    recent_bad: int = 0  # how many of `recent` are bad (kept as they come and go)
    attributions: Counter = field(default_factory=Counter)
    # How each mismatch's attribution ended (Evidence.attribution_status; "" from a verifier
    # that does not say): "exact", "nearest", "budget", "cap", ...
    attribution_status: Counter = field(default_factory=Counter)
    last_attribution: str = ""
    last_verdict_t: float | None = None  # receive time (monotonic)
    last_seen: float = 0.0  # receive time (monotonic) of the last message about this node
    declared: dict[str, Any] = field(default_factory=dict)
    open_alerts: int = 0
    util_hist: History = field(default_factory=lambda: History(1))
    mismatch_hist: History = field(default_factory=lambda: History(1))
    connection: str = "live"
    # Hidden work (monitor/capacity.py): the verifier's last accounting window and its note,
    # the windows over time, the processes on the node's GPUs, its hidden-work alerts. The
    # series and the alerts are made for a node when it first has some.
    capacity: CapacityWindow | None = None
    capacity_note: str = ""
    capacity_hist: CapacityHistory | None = None
    procs: Processes | None = None
    hidden_alerts: deque[Alert] | None = None
    challenges: ChallengeSummary | None = None  # the verifier's timed challenges of the node
    capacity_version: int = 0  # bumps when any of those changes: the capacity screen repaints
    _rate_window: Ring = field(default_factory=lambda: Ring(RATE_WINDOW))  # (tick, commits)

    @property
    def checked(self) -> int:
        return sum(self.verdicts.values())

    @property
    def sampled(self) -> float | None:
        """Share of committed records the verifier has judged (any status but chain_break)."""
        if not self.commits:
            return None
        n = self.checked - self.verdicts["chain_break"]
        return min(1.0, n / self.commits)

    @property
    def verified(self) -> float | None:
        """Share of committed records replayed and found to match."""
        if not self.commits:
            return None
        good = sum(self.verdicts[s] for s in GOOD_STATUSES)
        return min(1.0, good / self.commits)

    @property
    def health(self) -> str:
        if self.recent_bad:
            return "flagged"
        if self.open_alerts:
            return "alert"
        if self.recent and all(s == "unverifiable" for s in self.recent):
            return "unverifiable"
        if self.recent:
            return "ok"
        return "pending"


def attribution_fields(v: Verdict) -> list[str]:
    """The setup fields the verifier's best candidate changes (the attribution's vocabulary).

    Candidates come nearest first (replay/attribution.py); a pair is named "batch_size+dtype".
    """
    return v.attribution[0].fields() if v.attribution else []


class FleetModel:
    """The fleet as the monitor knows it. Not thread-safe: one owner applies messages."""

    def __init__(
        self, limits: Limits | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limits = limits or Limits()
        self.clock = clock
        self.nodes: dict[str, NodeRow] = {}
        self.verdicts: deque[VerdictEntry] = deque(maxlen=self.limits.max_verdicts)
        self.verdicts_total = 0  # ever received, so a paused view knows what it missed
        self.alerts: OrderedDict[str, AlertEntry] = OrderedDict()  # alert_key -> group
        self.alerts_total = 0  # distinct alerts ever received (the groups hold their counts)
        self.alerts_version = 0  # bumps when any group changes: the alerts view repaints
        self._alert_ids: OrderedDict[str, None] = OrderedDict()  # alert ids, for Clone dedupe
        self.endpoints: dict[str, str] = {}  # endpoint -> "connecting" | "live" | "lost"
        self.rejected: Counter = Counter()  # wire reject reasons, from the feed
        self.dropped_nodes = 0
        self._seen: OrderedDict[tuple, None] = OrderedDict()  # verdict keys, for Clone dedupe
        self._dirty: set[str] = set()
        self.version = 0  # bumps on every change: cheap "anything new?" for views

    # -- input ---------------------------------------------------------------------------
    def apply(self, msg: Message, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        if isinstance(msg, Telemetry):
            self._telemetry(msg, now)
        elif isinstance(msg, Commit):
            self._commit(msg, now)
        elif isinstance(msg, Verdict):
            self._verdict(msg, now)
        elif isinstance(msg, Alert):
            self._alert(msg, now)
        elif isinstance(msg, Head):
            row = self._row(msg.node, now)
            if row is not None:
                row.heads += 1
        elif isinstance(msg, StateReply):
            self.apply_state(msg, now)
            return
        else:
            return
        self.version += 1

    def apply_many(self, msgs: Iterable[Message], now: float | None = None) -> None:
        now = self.clock() if now is None else now
        for m in msgs:
            try:
                self.apply(m, now)
            except Exception as e:  # one message the model cannot take never stops the view
                self.rejected[f"apply:{type(e).__name__}"] += 1

    def apply_state(self, reply: StateReply, now: float | None = None) -> None:
        """The daemon's state (Clone pattern): node summaries, recent verdicts, alerts. At
        start it fills a late joiner's view; the periodic refreshes after it bring the
        verifier's accounting windows. A summary is the daemon's word, not the node's: it
        never makes a node look live (only a node's own messages do)."""
        now = self.clock() if now is None else now
        counts: dict[str, dict[Status, int]] = {}
        for name, summary in reply.nodes.items():
            known = name in self.nodes
            row = self._row(name, now, seen=not known)
            if row is None:
                continue
            if summary.declared:
                row.declared = summary.declared
            row.last_seq = max(row.last_seq, summary.chain_head_seq)
            row.commits = max(row.commits, summary.commits)
            if summary.last_telemetry is not None and not row.source:
                # Only a view without telemetry of its own takes the daemon's last copy.
                self._telemetry(summary.last_telemetry, now, seen=not known)
            self._accounting(row, summary)
            counts[row.node] = summary.verdicts
        for v in reply.verdicts:
            self._verdict(v, now)
        for a in reply.alerts:
            self._alert(a, now)
        # The daemon's counts cover its whole store; the verdicts sent are only the latest.
        for node, c in counts.items():
            row = self.nodes[node]
            for status, n in c.items():
                if n > row.verdicts[status]:
                    row.verdicts[status] = n
        self.version += 1

    def set_endpoint(self, endpoint: str, state: str) -> None:
        self.endpoints[endpoint] = state
        self.version += 1

    def _row(self, node: str, now: float, seen: bool = True) -> NodeRow | None:
        """The node's row, made at first sight; `seen`: the node itself spoke just now."""
        row = self.nodes.get(node)
        if row is None:
            if len(self.nodes) >= self.limits.max_nodes:
                self.dropped_nodes += 1
                return None
            h = self.limits.history
            row = NodeRow(
                node=node,
                recent=Ring(self.limits.recent),
                util_hist=History(h),
                mismatch_hist=History(h),
            )
            row._rate_window.append((now, 0))  # its commits are counted from first sight
            self.nodes[node] = row
            seen = True
        if seen:
            row.last_seen = now
            if row.connection != "live":
                row.connection = "live"
        self._dirty.add(node)
        return row

    def _telemetry(self, m: Telemetry, now: float, seen: bool = True) -> None:
        row = self._row(m.node, now, seen)
        if row is None:
            return
        row.source = m.source
        gpus = m.gpus
        row.gpus = len(gpus)
        procs = capacity.processes(m) if gpus else None
        if procs != row.procs:
            row.procs = procs
            row.capacity_version += 1
        if gpus:
            utils = [g.util for g in gpus if g.util is not None]
            row.util = sum(utils) / len(utils) if utils else None
            row.mem_used = _sum(g.mem_used for g in gpus)
            row.mem_total = _sum(g.mem_total for g in gpus)
            row.power = _sum(g.power_w for g in gpus)
            row.gpu_names = ", ".join(sorted({g.name for g in gpus if g.name}))
        else:
            # No NVIDIA GPU: the agent reports the host's real CPU and memory use instead.
            row.util = m.host.cpu_util
            row.mem_used = m.host.mem_used
            row.mem_total = m.host.mem_total
            row.power = None
            row.gpu_names = "no NVIDIA GPU"

    def _accounting(self, row: NodeRow, summary: NodeSummary) -> None:
        """The verifier's accounting of the node's GPU activity, from its node summary."""
        row.capacity_note = summary.capacity
        if summary.challenges is not None and summary.challenges != row.challenges:
            row.challenges = summary.challenges
            row.capacity_version += 1
        w = summary.accounting
        if w is None:
            return
        if row.capacity_hist is None:
            row.capacity_hist = CapacityHistory(self.limits.capacity_windows)
        if row.capacity_hist.add(w):  # a window already seen (the next refresh) is not new
            row.capacity = w
            row.capacity_version += 1

    def _commit(self, m: Commit, now: float) -> None:
        row = self._row(m.node, now)
        if row is None:
            return
        row.commits += 1
        row.last_seq = max(row.last_seq, m.seq)
        row.declared = m.setup

    def _verdict(self, v: Verdict, now: float) -> None:
        key = (v.node, v.seq, v.status, v.t)
        if key in self._seen:
            return  # already had it: the snapshot and the live feed overlap (Clone)
        self._seen[key] = None
        if len(self._seen) > 4 * self.limits.max_verdicts:
            self._seen.popitem(last=False)
        row = self._row(v.node, now)
        self.verdicts_total += 1
        entry = VerdictEntry(verdict=v, received=now, key=key, n=self.verdicts_total)
        self.verdicts.append(entry)
        if row is None:
            return
        row.verdicts[v.status] += 1
        rec = row.recent
        if len(rec) == rec.maxlen and rec[0] in BAD_STATUSES:
            row.recent_bad -= 1  # the oldest is about to go
        rec.append(v.status)
        if v.status in BAD_STATUSES:
            row.recent_bad += 1
        row.last_verdict_t = now
        if v.declared and not row.declared:
            row.declared = v.declared
        if v.status == "mismatch":
            fields = entry.attribution
            for f in fields:
                row.attributions[f] += 1
            how = v.evidence.attribution_status
            row.attribution_status[how or "unstated"] += 1
            why = f" ({how})" if how else ""
            row.last_attribution = ",".join(fields) or f"unattributed{why}"
        elif v.status in BAD_STATUSES:
            row.last_attribution = v.status

    def _alert(self, a: Alert, now: float) -> None:
        if a.id in self._alert_ids:
            return  # the same alert again: the snapshot and the live feed overlap (Clone)
        self._alert_ids[a.id] = None
        if len(self._alert_ids) > ALERT_IDS_KEPT:
            self._alert_ids.popitem(last=False)
        self.alerts_total += 1
        key = alert_key(a)
        entry = self.alerts.get(key)
        if entry is None:
            self.alerts[key] = AlertEntry(
                alert=a, first=now, last=now, first_t=a.t, last_t=a.t, severity=a.severity
            )
            self._count_alert(a.node, +1)
            while len(self.alerts) > self.limits.max_alerts:
                self._evict_alert()
        else:
            entry.count += 1
            entry.last = now
            if a.t >= entry.last_t:  # a snapshot may bring older ones after newer ones
                entry.alert = a
                entry.last_t = a.t
            entry.first_t = min(entry.first_t, a.t)
            if SEVERITY_RANK.get(a.severity, 0) > SEVERITY_RANK.get(entry.severity, 0):
                entry.severity = a.severity
            if entry.acked:  # acknowledged, and it happened again: open again
                entry.acked = False
                self._count_alert(a.node, +1)
            self.alerts.move_to_end(key)  # eviction takes the longest quiet first
        self.alerts_version += 1
        row = self.nodes.get(a.node)
        if row is not None:
            self._dirty.add(a.node)
            if a.kind in capacity.HIDDEN_KINDS:
                if row.hidden_alerts is None:
                    row.hidden_alerts = deque(maxlen=capacity.ALERTS_KEPT)
                row.hidden_alerts.append(a)
                row.capacity_version += 1

    def _evict_alert(self) -> None:
        # Drop the oldest acknowledged alert first; only then the oldest open one.
        victim = next((k for k, e in self.alerts.items() if e.acked), None)
        if victim is None:
            victim = next(iter(self.alerts))
        e = self.alerts.pop(victim)
        if not e.acked:
            self._count_alert(e.alert.node, -1)

    def _count_alert(self, node: str, delta: int) -> None:
        row = self.nodes.get(node)
        if row is not None:
            row.open_alerts = max(0, row.open_alerts + delta)
            self._dirty.add(node)

    # -- operator actions ----------------------------------------------------------------
    def acknowledge(self, key: str) -> bool:
        """Acknowledge a group (`alert_key`): it stays, marked, until its kind recurs."""
        e = self.alerts.get(key)
        if e is None or e.acked:
            return False
        e.acked = True
        self._count_alert(e.alert.node, -1)
        self.version += 1
        self.alerts_version += 1
        return True

    @property
    def open_alerts(self) -> int:
        """Open groups (node and kind): what an inspector still has to look at."""
        return sum(1 for e in self.alerts.values() if not e.acked)

    # -- time ----------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> None:
        """Once a second: rates, sparkline points, live/stale/lost from message age."""
        now = self.clock() if now is None else now
        lim = self.limits
        for row in self.nodes.values():
            # Commit rate over the last RATE_WINDOW ticks: steady at low rates (0.5/s).
            rw = row._rate_window
            rw.append((now, row.commits))  # the ring drops the oldest past RATE_WINDOW
            # At least a second apart: a one-shot snapshot ticks microseconds after the state
            # reply that brought a node's whole count (it printed 62,000 commits/s for 33).
            if len(rw) > 1 and rw[-1][0] - rw[0][0] >= 1.0:
                row.commits_per_s = (rw[-1][1] - rw[0][1]) / (rw[-1][0] - rw[0][0])
            row.util_hist.append(row.util or 0.0)
            # Share of bad verdicts among the last `recent` (what decides health): steady
            # between verdicts, where a per-tick share jumps to 100% on one bad verdict.
            rec = row.recent
            row.mismatch_hist.append(row.recent_bad / len(rec) if rec else 0.0)
            age = now - row.last_seen
            conn = (
                "live"
                if age <= lim.stale_after_s
                else "stale"
                if age <= lim.lost_after_s
                else "lost"
            )
            if conn != row.connection:
                row.connection = conn
            self._dirty.add(row.node)
        self.version += 1

    def take_dirty(self) -> set[str]:
        d, self._dirty = self._dirty, set()
        return d

    # -- output --------------------------------------------------------------------------
    def node_counts(self) -> Counter:
        return Counter(r.health for r in self.nodes.values())

    def to_json(self) -> dict[str, Any]:
        """The fleet as plain data: `fpmon snapshot --json` and the demo's summary."""
        return {
            "nodes": [
                {
                    "node": r.node,
                    "health": r.health,
                    "connection": r.connection,
                    "gpus": r.gpus,
                    "source": r.source,
                    "util": r.util,
                    "mem_used": r.mem_used,
                    "mem_total": r.mem_total,
                    "power": r.power,
                    "commits": r.commits,
                    "last_seq": r.last_seq,
                    "commits_per_s": round(r.commits_per_s, 3),
                    "sampled": r.sampled,
                    "verified": r.verified,
                    "verdicts": dict(r.verdicts),
                    "attributions": dict(r.attributions),
                    "attribution_status": dict(r.attribution_status),
                    "open_alerts": r.open_alerts,
                    "declared": r.declared,
                    # The verifier's last accounting window (NodeSummary.accounting) and the
                    # processes on the node's GPUs that are not its engine's.
                    "accounting": r.capacity.to_map() if r.capacity is not None else None,
                    "foreign_processes": r.procs.foreign if r.procs is not None else None,
                }
                for r in sorted(self.nodes.values(), key=lambda r: r.node)
            ],
            # One entry per node and kind: the latest alert, with the group's figures.
            "alerts": [
                {
                    **e.alert.to_map(),
                    "count": e.count,
                    "acked": e.acked,
                    "first_t": e.first_t,
                    "last_t": e.last_t,
                    "worst_severity": e.severity,
                }
                for e in self.alerts.values()
            ],
            "alerts_total": self.alerts_total,
            "open_alerts": self.open_alerts,
            "verdicts_total": self.verdicts_total,
            "endpoints": dict(self.endpoints),
            "rejected": dict(self.rejected),
        }


def _sum(values: Iterable[float | None]) -> float | None:
    """The sum of the figures that were read; None when none was (unknown is not zero)."""
    vals = [x for x in values if x is not None]
    return sum(vals) if vals else None


def evidence_layers(v: Verdict) -> list[tuple[str, float, float | None]]:
    """Per-probe (name, distance, noise band) from a verdict's evidence, in probe order."""
    return [(p.probe, p.rel, p.band) for p in v.evidence.probes]
