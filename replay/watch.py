"""Once-a-second watches over each node: floods and garbage, commits no signed head covers,
GPU activity (or a CPU engine's CPU time) the declared tokens do not explain and processes on
a node's GPUs that are not its engine's (replay/accounting.py). Each returns the alerts to raise.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from fpmon.replay.accounting import Accounting, Alarm
from fpmon.replay.config import ReplayConfig
from fpmon.replay.intake import Intake
from fpmon.replay.timing import TimingModel
from fpmon.wire import Telemetry
from fpmon.wire.messages import AlertKind, Severity

TICK_S = 1.0


@dataclass(frozen=True)
class Raise:
    kind: AlertKind
    node: str
    message: str
    alert_id: str
    seq: int = -1
    severity: Severity | Literal[""] = ""  # "": the kind's default
    details: dict[str, Any] = field(default_factory=dict)


class Watch:
    def __init__(self, cfg: ReplayConfig, intake: Intake, timing: TimingModel) -> None:
        self.cfg, self.intake, self.timing = cfg, intake, timing
        self.accounting = Accounting(cfg.accounting_settings, cfg.timing.capacity_window_s)
        self._alarms: list[Alarm] = []  # foreign processes found as telemetry arrives
        self._uncovered_since: dict[str, tuple[float, int]] = {}
        self._spoofed_seen: dict[str, int] = {}
        self._unattributed_seen = 0
        self._unattributed_t = 0.0

    def telemetry(self, node: str, t: Telemetry) -> None:
        """Account one telemetry sample: the node's own GPUs' activity, foreign processes."""
        self._alarms += self.accounting.telemetry(node, t, time.time())

    def judged(
        self,
        node: str,
        reference_s: float,
        tokens: int,
        activity: dict[str, float] | None,
        cpu_s: float | None = None,
    ) -> None:
        """A replay's cost on the reference: what one declared token explains."""
        self.accounting.judged(
            node, reference_s, tokens, activity, self.cfg.replay.device, cpu_s=cpu_s
        )

    def check(self, now: float) -> list[Raise]:
        return [
            *self.floods(now),
            *self.unsigned(now),
            *self.spoofed(now),
            *self.capacity(now),
        ]

    def capacity(self, now: float) -> list[Raise]:
        alarms, self._alarms = self._alarms, []
        for node, st in self.intake.stats.items():

            def since(start: float, st: Any = st) -> int:
                return sum(n for t, n in st.tokens if t >= start)

            a = self.accounting.check(node, now, since)
            if a is not None:
                alarms.append(a)
        return [
            Raise(a.kind, a.node, a.message, a.alert_id, severity=a.severity, details=a.details)
            for a in alarms
        ]

    def floods(self, now: float) -> list[Raise]:
        out = []
        limit = self.cfg.limits.flood_msgs_per_s
        for node, st in self.intake.stats.items():
            dt = now - st.window_start if st.window_start else TICK_S
            minute = f"{now // 60:.0f}"
            if st.window_msgs / max(dt, 1e-3) > limit:
                out.append(
                    Raise(
                        "flood",
                        node,
                        f"{node} sent {st.window_msgs} messages in {dt:.1f} s (limit {limit:g}/s)",
                        f"flood:{node}:{minute}",
                        details={"messages": st.window_msgs, "seconds": round(dt, 2)},
                    )
                )
            if st.window_rejects > self.cfg.limits.flood_rejects_per_min * dt / 60:
                out.append(
                    Raise(
                        "flood",
                        node,
                        f"{node} sent {st.window_rejects} rejected "
                        f"frames in {dt:.1f} s: {dict(st.rejects)}",
                        f"garbage:{node}:{minute}",
                        details={"rejects": dict(st.rejects)},
                    )
                )
            st.window_msgs = st.window_rejects = 0
            st.window_start = now
        out += self._unattributed(now)
        return out

    def _unattributed(self, now: float) -> list[Raise]:
        """Garbage no node can be named for (unknown names, undecodable frames through the
        hub): a flood of it still costs the feed capacity, so it is an alert of its own."""
        total = sum(self.intake.rejects.values())
        new, self._unattributed_seen = total - self._unattributed_seen, total
        dt = now - self._unattributed_t if self._unattributed_t else TICK_S
        self._unattributed_t = now
        if new <= self.cfg.limits.flood_rejects_per_min * dt / 60:
            return []
        reasons = dict(self.intake.rejects.most_common(5))
        return [
            Raise(
                "flood",
                "(unattributed)",
                f"{new} frames in {dt:.1f} s that no configured node can be named for: "
                f"{reasons}; honest commits lost in it are fetched from the nodes' logs",
                f"flood:unattributed:{now // 60:.0f}",
                details={"rejects": reasons, "seconds": round(dt, 2)},
            )
        ]

    def unsigned(self, now: float) -> list[Raise]:
        """Commits no signed head has covered for `head_timeout_s` while the node is up.

        The repairer asks a node with uncovered commits for a head (repair.py), so this fires
        only when a node that keeps talking will not sign what it committed. A node that went
        silent (down, paused, partitioned) signs nothing because it says nothing: that is not
        a finding, and its next head covers the rest.
        """
        out = []
        mono = time.monotonic()
        for node, ch in self.intake.chains.nodes.items():
            alive = mono - self.intake.stats[node].last_msg_t < self.cfg.limits.head_timeout_s / 2
            if ch.seq < 0 or ch.head_seq >= ch.seq or not alive:
                self._uncovered_since.pop(node, None)
                continue
            since = self._uncovered_since.setdefault(node, (now, ch.head_seq))
            if since[1] != ch.head_seq:  # a head came, but commits outran it again
                self._uncovered_since[node] = since = (now, ch.head_seq)
            if now - since[0] >= self.cfg.limits.head_timeout_s:
                out.append(
                    Raise(
                        "unsigned",
                        node,
                        f"{node}: commits {ch.head_seq + 1}..{ch.seq} not covered by a signed "
                        f"head for {now - since[0]:.0f} s while the node is up",
                        f"unsigned:{node}:{ch.head_seq}",
                        seq=ch.seq,
                        severity="warning",
                        details={"head_seq": ch.head_seq, "commit_seq": ch.seq},
                    )
                )
        return out

    def spoofed(self, now: float) -> list[Raise]:
        """Inputs under a node's name that it never signed: someone is impersonating it."""
        out = []
        for node, st in self.intake.stats.items():
            new = st.spoofed - self._spoofed_seen.get(node, 0)
            self._spoofed_seen[node] = st.spoofed
            if new > 0:
                out.append(
                    Raise(
                        "spoofed",
                        node,
                        f"{new} messages under {node}'s name that it did not sign (commits "
                        "contradicting its verified chain, or heads failing its pinned key): "
                        f"dropped; {node} is the target, not the suspect",
                        f"spoofed:{node}:{now // 60:.0f}",
                        severity="warning",
                        details={"dropped": new, "total": st.spoofed},
                    )
                )
        return out
