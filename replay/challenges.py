"""Verifier-timed challenges, bookkeeping (daemon main thread): follow each challenge from its
send to its verdict and judge it.

A challenge is a request the daemon itself sent through a node's intake (challenge_client.py,
at keyed-PRF times: challenge_schedule.py). Its commitment is recognised by request id and
force-opened whatever the sample says; once the node's reply (timed by the verifier) and the
record's verdict (the reference's replay time for the declared setup) are both in, it is judged
(challenge_judge.py). Time the node cannot misreport: the committed times and telemetry are its
word, the latency is the verifier's stopwatch.

What can go wrong, and what it raises:
- over the band in `confirm` of the node's last `window` judged challenges ->
  `suspected_hidden_work` (`details.source = "challenge"`), once per change of state;
- refused (`rejected`/`error`), no reply within `timeout_s`, intake not reachable, answered but
  never committed, committed but never opened (`unopened`) -> `challenge_failed`, a **warning**:
  a node restarting, or refusing under load, does exactly this, so it is never an accusation;
- the verifier's own failures (shed for lack of room, a cross-device pair with no speed
  calibration, a record that is unverifiable or already a finding) -> counted, not alerted.
"""

from __future__ import annotations

import queue
import statistics
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from fpmon.replay.challenge_client import Answered, Event, Failed, Sent
from fpmon.replay.challenge_judge import (
    CONFIRM,
    WINDOW,
    Band,
    Judged,
    Seen,
    judge,
    queue_seconds,
)
from fpmon.replay.watch import Raise
from fpmon.wire import ChallengePoint, ChallengeSummary, Commit, Verdict

RECENT = 32  # challenges kept per node for the state (and the dashboard)
WINDOW_MAX = 4096  # commitments kept per node while one of its challenges is open
TIMED = ("match", "within_noise", "mismatch")  # replayed: the reference time is known
BLIND_SPOTS = (
    "queueing behind the node's real traffic is tolerated only as far as that traffic is "
    "committed; the node's committed times are its word (judged by the timing check); a node "
    "that can tell a challenge from ordinary traffic (its client key, connection, prompt or "
    "token budget) can serve challenges alone fast"
)


@dataclass
class Challenge:
    sent: Sent
    created: float  # monotonic
    answer: Answered | None = None
    own: Seen | None = None  # its commitment, once seen
    verdict: Verdict | None = None
    reference_s: float = 0.0
    committed_s: float = 0.0
    output_ids: tuple[int, ...] | None = None  # the opened record's, when replayed


@dataclass
class NodeBook:
    counts: Counter[str] = field(default_factory=Counter)
    recent: deque[ChallengePoint] = field(default_factory=lambda: deque(maxlen=RECENT))
    flags: deque[bool] = field(default_factory=deque)  # over, for the last `window` judged
    overs: deque[dict[str, Any]] = field(default_factory=deque)  # their details
    alerted: bool = False
    seen: deque[Seen] = field(default_factory=lambda: deque(maxlen=WINDOW_MAX))


class ChallengeBook:
    def __init__(
        self,
        nodes: list[str],
        band: Band,
        *,
        epoch: int,
        confirm: int = CONFIRM,
        window: int = WINDOW,
        verdict_timeout_s: float = 600.0,
    ) -> None:
        self.band, self.epoch = band, epoch
        self.confirm, self.window = confirm, max(window, confirm)
        self.verdict_timeout_s = verdict_timeout_s
        self.nodes = {n: NodeBook() for n in nodes}
        self._lock = threading.Lock()  # `register` runs on the client's thread
        self._by_request: dict[tuple[str, str], Challenge] = {}
        self._by_seq: dict[tuple[str, int], Challenge] = {}
        self._open: Counter[str] = Counter()  # open challenges per node
        self.ratios: list[float] = []  # judged since the daemon last read them (metrics)

    # --- the client's thread --------------------------------------------------------------
    def register(self, sent: Sent) -> None:
        with self._lock:
            self._by_request[(sent.node, sent.request_id)] = Challenge(sent, time.monotonic())
            self._open[sent.node] += 1

    # --- the intake (hot path: every commitment of every node) ----------------------------
    def on_commit(self, c: Commit) -> bool:
        """See a verified commitment; True when it is a challenge's (force it open)."""
        if not self._open.get(c.node):
            return False
        s = Seen(time.monotonic(), c.seq, c.t, c.prefill_s + c.decode_s)
        self.nodes[c.node].seen.append(s)
        with self._lock:
            ch = self._by_request.get((c.node, c.request_id))
        if ch is None or ch.own is not None:
            return False
        ch.own = s
        self._by_seq[(c.node, c.seq)] = ch
        self.nodes[c.node].counts["committed"] += 1
        return True

    # --- the main loop --------------------------------------------------------------------
    def drain(self, events: queue.Queue[Event]) -> list[Raise]:
        out: list[Raise] = []
        while True:
            try:
                e = events.get_nowait()
            except queue.Empty:
                return out
            ch = self._challenge(e.node if isinstance(e, Sent) else e.sent.node, e)
            if ch is None:
                continue
            if isinstance(e, Sent):
                ch.sent = e  # the time it actually left
                self.nodes[e.node].counts["sent"] += 1
            elif isinstance(e, Failed):
                out += self._failed(ch, e.why, e.detail)
            else:
                out += self._answered(ch, e)

    def _challenge(self, node: str, e: Event) -> Challenge | None:
        rid = e.request_id if isinstance(e, Sent) else e.sent.request_id
        with self._lock:
            return self._by_request.get((node, rid))

    def _answered(self, ch: Challenge, a: Answered) -> list[Raise]:
        ch.answer = a
        node = a.sent.node
        self.nodes[node].counts["answered"] += 1
        if a.reply.status != "ok":
            why = (
                f"the node answered {a.reply.status!r} after {a.latency_s:.2f} s: "
                f"{a.reply.reason or 'no reason given'} (an honest node under load refuses too)"
            )
            return self._failed(ch, "refused", why)
        return self._ready(ch)

    def verdict(
        self,
        v: Verdict,
        reference_s: float = 0.0,
        committed_s: float = 0.0,
        output_ids: tuple[int, ...] | None = None,
    ) -> list[Raise]:
        """A verdict was stored; if it is a challenge's record, judge the challenge."""
        ch = self._by_seq.get((v.node, v.seq))
        if ch is None or ch.verdict is not None:
            return []
        ch.verdict, ch.reference_s, ch.committed_s = v, reference_s, committed_s
        ch.output_ids = output_ids
        if v.status == "unopened":
            return self._failed(ch, "unopened", f"its record was not opened: {v.reason}")
        return self._ready(ch)

    def dropped(self, c: Commit) -> None:
        """The verifier shed a challenge's record (no room): its fault, not the node's."""
        ch = self._by_seq.get((c.node, c.seq))
        if ch is not None:
            self._finish(ch, "not_judged:shed")

    def _ready(self, ch: Challenge) -> list[Raise]:
        if ch.answer is None or ch.verdict is None or ch.own is None:
            return []
        v, a = ch.verdict, ch.answer
        lie = self._served_mismatch(ch)
        if lie:
            return lie
        if v.status not in TIMED or ch.reference_s <= 0:
            # unverifiable, bad_opening, chain_break: the verdict's own alert says so
            self._finish(ch, f"not_judged:{v.status}")
            return []
        if v.cross_gpu:
            self._finish(ch, "not_judged:cross_device")  # no speed calibration between GPUs
            return []
        nb = self.nodes[v.node]
        q = queue_seconds(nb.seen, ch.own, a.sent.sent, a.answered)
        j = judge(a.latency_s, ch.reference_s, ch.committed_s or ch.own.committed_s, q, self.band)
        self._finish(ch, "over" if j.over else "within")
        nb.counts["judged"] += 1
        self.ratios.append(j.ratio)
        nb.recent.append(
            ChallengePoint(
                t=a.sent.sent_wall,
                seq=v.seq,
                latency_s=j.latency_s,
                reference_s=j.reference_s,
                queue_s=j.queue_s,
                committed_s=j.committed_s,
                ratio=j.ratio,
                over=j.over,
            )
        )
        return self._confirm(v.node, nb, j, ch)

    def _confirm(self, node: str, nb: NodeBook, j: Judged, ch: Challenge) -> list[Raise]:
        """Alert when `confirm` of the last `window` judged challenges were over the band: one
        slow challenge (a pause on either host, the first request after a restart) is not
        enough to accuse a node."""
        d = {
            **j.details(self.band),
            "seq": ch.verdict.seq if ch.verdict else -1,
            "request_id": ch.sent.request_id,
            "k": ch.sent.k,
            "epoch": self.epoch,
        }
        if ch.answer is not None and ch.answer.reply.seq not in (-1, d["seq"]):
            d["reply_seq"] = ch.answer.reply.seq  # the reply named another record
        nb.flags.append(j.over)
        if j.over:
            nb.overs.append(d)
        while len(nb.flags) > self.window:
            nb.flags.popleft()
        while len(nb.overs) > self.window:
            nb.overs.popleft()
        confirmed = sum(nb.flags) >= self.confirm
        if not confirmed or nb.alerted:
            nb.alerted = confirmed
            return []
        nb.alerted = True
        ratios = [o["ratio"] for o in nb.overs]
        msg = (
            f"{node}: {sum(nb.flags)} of its last {len(nb.flags)} verifier-timed challenges "
            f"took far longer than the reference replay of the same request allows (latest: "
            f"{j.latency_s:.2f} s against {j.reference_s:.2f} s reference + {j.queue_s:.2f} s "
            f"of committed work it queued behind; limit {j.limit_s:.2f} s = "
            f"{self.band.max_ratio:g} x + {self.band.slack_s:g} s; its own record admits "
            f"{j.committed_s:.2f} s): suspected hidden work. Blind spots: {BLIND_SPOTS}"
        )
        details: dict[str, Any] = {
            "source": "challenge",
            **d,
            "over": sum(nb.flags),
            "judged": len(nb.flags),
            "confirm": self.confirm,
            "ratios": ratios,
            "blind_spot": BLIND_SPOTS,
        }
        return [
            Raise(
                "suspected_hidden_work",
                node,
                msg,
                f"suspected_hidden_work:challenge:{node}:{d['seq']}",
                seq=int(d["seq"]),
                severity="warning",
                details=details,
            )
        ]

    def _served_mismatch(self, ch: Challenge) -> list[Raise]:
        """The verifier was the client here, so it holds what was served: a reply whose tokens
        or record differ from the record the node committed and opened for that request means
        the node served one thing and committed another (the commitment is signed; the reply
        came over its intake)."""
        a, v = ch.answer, ch.verdict
        if a is None or v is None:
            return []
        why = []
        if a.reply.seq not in (-1, v.seq):
            why.append(f"the reply names record {a.reply.seq}, the commitment is record {v.seq}")
        if ch.output_ids is not None and tuple(a.reply.output_ids) != ch.output_ids:
            why.append(
                f"it served {len(a.reply.output_ids)} tokens that differ from the "
                f"{len(ch.output_ids)} its committed record says it served"
            )
        if not why:
            return []
        node, s = v.node, ch.sent
        self._finish(ch, "served_mismatch")
        return [
            Raise(
                "served_mismatch",
                node,
                f"{node} seq {v.seq}: served the verifier's challenge {s.k} something other "
                f"than it committed: {'; '.join(why)}"[:500],
                f"served_mismatch:{node}:{s.request_id}",
                seq=v.seq,
                severity="critical",
                details={"request_id": s.request_id, "k": s.k, "epoch": self.epoch, "why": why},
            )
        ]

    def _failed(self, ch: Challenge, why: str, detail: str) -> list[Raise]:
        node, s = ch.sent.node, ch.sent
        self._finish(ch, f"failed:{why}")
        seq = ch.own.seq if ch.own else -1
        return [
            Raise(
                "challenge_failed",
                node,
                f"{node}: challenge {s.k} ({why}): {detail}"[:500],
                f"challenge_failed:{node}:{s.request_id}",
                seq=seq,
                severity="warning",
                details={
                    "why": why,
                    "request_id": s.request_id,
                    "k": s.k,
                    "epoch": self.epoch,
                    "detail": detail[:1000],
                },
            )
        ]

    def _finish(self, ch: Challenge, outcome: str) -> None:
        node = ch.sent.node
        with self._lock:
            if self._by_request.pop((node, ch.sent.request_id), None) is None:
                return  # already finished
            self._open[node] -= 1
            idle = self._open[node] <= 0
        if ch.own is not None:
            self._by_seq.pop((node, ch.own.seq), None)
        nb = self.nodes[node]
        nb.counts[outcome] += 1
        if idle:
            nb.seen.clear()  # nothing left to explain with it

    def tick(self, now: float | None = None) -> list[Raise]:
        """Challenges still without a verdict `verdict_timeout_s` after they were sent."""
        now = time.monotonic() if now is None else now
        with self._lock:
            stale = [
                ch
                for ch in self._by_request.values()
                if ch.answer is not None and now - ch.created > self.verdict_timeout_s
            ]
        out: list[Raise] = []
        for ch in stale:
            if ch.own is None:
                why = "uncommitted"
                detail = (
                    f"answered, but no commitment for request {ch.sent.request_id} arrived in "
                    f"{self.verdict_timeout_s:g} s (a node serves what it commits)"
                )
            else:
                why = "unjudged"
                detail = (
                    f"committed as seq {ch.own.seq}, no verdict in {self.verdict_timeout_s:g} s"
                )
            out += self._failed(ch, why, detail)
        return out

    # --- the state ------------------------------------------------------------------------
    def summary(self, node: str) -> ChallengeSummary | None:
        nb = self.nodes.get(node)
        if nb is None:
            return None
        c = nb.counts
        ratios = [p.ratio for p in nb.recent]
        return ChallengeSummary(
            sent=c["sent"],
            answered=c["answered"],
            judged=c["judged"],
            over=c["over"],
            failed=sum(n for k, n in c.items() if k.startswith("failed:")),
            not_judged=sum(n for k, n in c.items() if k.startswith("not_judged:")),
            median_ratio=statistics.median(ratios) if ratios else None,
            max_ratio=self.band.max_ratio,
            slack_s=self.band.slack_s,
            alerted=nb.alerted,
            recent=list(nb.recent),
        )

    def totals(self) -> Counter[str]:
        """Outcomes over every node, for the metrics."""
        out: Counter[str] = Counter()
        for nb in self.nodes.values():
            out.update(nb.counts)
        return out
