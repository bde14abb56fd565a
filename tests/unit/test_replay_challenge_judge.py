"""Judging challenges: the band, the queue a challenge waited in, and the bookkeeping from send
to verdict (what raises `suspected_hidden_work` and what only `challenge_failed`)."""

from __future__ import annotations

import queue
import time

import pytest

from fpmon.replay.challenge_client import Answered, Event, Failed, Sent
from fpmon.replay.challenge_judge import Band, Seen, judge, queue_seconds
from fpmon.replay.challenges import ChallengeBook
from fpmon.wire import Commit, SubmitReply, Verdict

BAND = Band(max_ratio=3.0, slack_s=0.5)


def test_the_band_is_a_ratio_of_the_reference_and_the_queue_plus_slack() -> None:
    ok = judge(latency_s=1.6, reference_s=0.2, committed_s=0.2, queue_s=0.2, band=BAND)
    assert ok.limit_s == pytest.approx(3.0 * 0.4 + 0.5) and not ok.over
    assert ok.ratio == pytest.approx(8.0) and ok.loaded_ratio == pytest.approx(4.0)
    slow = judge(latency_s=1.8, reference_s=0.2, committed_s=0.2, queue_s=0.0, band=BAND)
    assert slow.over and slow.limit_s == pytest.approx(1.1)
    # its own record admits 0.2 s of the 1.8 s: the rest is time it does not account for
    assert slow.unexplained_s == pytest.approx(1.6)
    d = slow.details(BAND)
    assert d["max_ratio"] == 3.0 and d["slack_s"] == 0.5 and d["limit_s"] == pytest.approx(1.1)


def test_queue_counts_other_earlier_batches_that_ended_while_the_challenge_waited() -> None:
    sent, answered = 100.0, 103.0
    own = Seen(arrival=102.9, seq=10, t=5.0, committed_s=0.3)
    seen = [
        Seen(99.0, 5, 1.0, 0.4),  # committed before the challenge was sent: did not delay it
        Seen(100.5, 6, 2.0, 0.4),  # a batch of two (same t and time) ended 0.5 s in:
        Seen(100.5, 7, 2.0, 0.4),  # counted once, and at most the 0.5 s waited so far
        Seen(101.8, 8, 3.0, 0.9),  # 1.8 s in: its whole 0.9 s
        Seen(102.9, 9, 5.0, 0.3),  # the challenge's own batch (a co-batched request)
        Seen(102.95, 11, 6.0, 0.5),  # after it in the log: served later, did not delay it
    ]
    assert queue_seconds(seen, own, sent, answered) == pytest.approx(0.4 + 0.9)
    late = [Seen(104.0, 8, 3.0, 9.0)]  # arrived after the reply: at most the whole wait
    assert queue_seconds(late, own, sent, answered) == pytest.approx(3.0)
    # Concurrent requests (a sidecar's) overlap: their sum never excuses more than the wait.
    side = [Seen(102.0 + i / 100, 1 + i, float(i), 2.0) for i in range(6)]
    assert queue_seconds(side, own, sent, answered) == pytest.approx(3.0)


# --- the bookkeeping -------------------------------------------------------------------------


def commit(node: str, seq: int, rid: str, t: float, secs: float = 0.2) -> Commit:
    return Commit(
        node=node,
        t=t,
        seq=seq,
        request_id=rid,
        record_digest=b"d" * 32,
        chain=b"c" * 32,
        setup={},
        model="tiny",
        prompt_tokens=4,
        output_tokens=16,
        prefill_s=secs / 4,
        decode_s=secs * 3 / 4,
    )


def verdict(node: str, seq: int, status: str = "match", **kw: object) -> Verdict:
    return Verdict(node=node, t=time.time(), seq=seq, status=status, **kw)  # type: ignore[arg-type]


class Run:
    """A book and the events its client thread would send, driven by hand."""

    def __init__(self, **kw: object) -> None:
        self.book = ChallengeBook(["n"], BAND, epoch=7, **kw)  # type: ignore[arg-type]
        self.events: queue.Queue[Event] = queue.Queue()
        self.k = 0
        self.seq = 0

    def send(self) -> Sent:
        now = time.monotonic()
        s = Sent("n", self.k, f"rid{self.k}", 16, now, time.time())
        self.k += 1
        self.book.register(s)
        self.events.put(s)
        return s

    def challenge(
        self,
        latency: float,
        reference: float,
        status: str = "match",
        served: tuple[int, ...] = (5, 6, 7),
        committed: tuple[int, ...] | None = (5, 6, 7),
        reply_seq: int | None = None,
        **vkw: object,
    ) -> list:
        s = self.send()
        seq = self.seq
        self.seq += 1
        assert self.book.on_commit(commit("n", seq, s.request_id, t=float(seq)))
        reply = SubmitReply(
            node="n",
            t=time.time(),
            request_id=s.request_id,
            status="ok",
            seq=seq if reply_seq is None else reply_seq,
            output_ids=list(served),
        )
        self.events.put(Answered(s, reply, s.sent + latency))
        out = self.book.drain(self.events)
        v = verdict("n", seq, status, **vkw)
        return out + self.book.verdict(v, reference, 0.2, committed)


def test_an_honest_node_is_judged_and_nothing_is_raised() -> None:
    r = Run()
    for _ in range(6):
        assert r.challenge(latency=0.4, reference=0.2) == []
    s = r.book.summary("n")
    assert s is not None
    assert (s.sent, s.answered, s.judged, s.over, s.failed) == (6, 6, 6, 0, 0)
    assert s.median_ratio == pytest.approx(2.0) and not s.alerted
    assert [p.seq for p in s.recent] == list(range(6))
    assert r.book.totals()["within"] == 6


def test_one_slow_challenge_is_not_an_accusation_two_are() -> None:
    r = Run(confirm=2, window=4)
    assert r.challenge(latency=5.0, reference=0.2) == []  # a pause, a first request: noted
    assert r.challenge(latency=0.3, reference=0.2) == []
    (alert,) = r.challenge(latency=6.0, reference=0.2)
    assert alert.kind == "suspected_hidden_work" and alert.severity == "warning"
    d = alert.details
    assert d["source"] == "challenge" and d["over"] == 2 and d["judged"] == 3
    assert d["latency_s"] == 6.0 and d["reference_s"] == 0.2 and d["limit_s"] == pytest.approx(1.1)
    assert d["ratio"] == 30.0 and d["max_ratio"] == 3.0 and d["epoch"] == 7
    assert d["ratios"] == [25.0, 30.0] and "queueing" in d["blind_spot"]
    assert "suspected hidden work" in alert.message and "Blind spots" in alert.message
    assert r.challenge(latency=6.0, reference=0.2) == []  # once per change of state
    assert r.book.summary("n").alerted  # type: ignore[union-attr]


def test_failures_are_warnings_never_accusations() -> None:
    r = Run()
    s = r.send()
    refused = SubmitReply(
        node="n", t=time.time(), request_id=s.request_id, status="rejected", reason="queue full"
    )
    r.events.put(Answered(s, refused, s.sent + 0.01))
    (a,) = r.book.drain(r.events)
    assert a.kind == "challenge_failed" and a.severity == "warning"
    assert a.details["why"] == "refused" and "queue full" in a.message
    s2 = r.send()
    r.events.put(Failed(s2, "timeout", "no reply within 60 s"))
    (b,) = r.book.drain(r.events)
    assert b.details["why"] == "timeout" and b.severity == "warning"
    # committed, answered, then the opening failed
    (c,) = r.challenge(latency=0.3, reference=0.0, status="unopened", reason="no answer")
    assert c.kind == "challenge_failed" and c.details["why"] == "unopened" and c.seq == 0
    assert r.book.summary("n").failed == 3  # type: ignore[union-attr]


def test_the_verifiers_own_failures_raise_nothing() -> None:
    r = Run()
    assert r.challenge(latency=9.0, reference=0.2, cross_gpu=True) == []  # no speed calibration
    assert r.challenge(latency=9.0, reference=0.0, status="unverifiable") == []
    s = r.send()
    c = commit("n", 99, s.request_id, t=1.0)
    assert r.book.on_commit(c)
    r.book.dropped(c)  # shed: no room for its opening
    assert r.book.verdict(verdict("n", 99), 0.2, 0.2) == []
    assert r.book.summary("n").not_judged == 3  # type: ignore[union-attr]
    assert r.book.totals()["not_judged:shed"] == 1


def test_an_answered_challenge_never_committed_fails_after_the_verdict_timeout() -> None:
    r = Run(verdict_timeout_s=10.0)
    s = r.send()
    reply = SubmitReply(node="n", t=time.time(), request_id=s.request_id, status="ok", seq=3)
    r.events.put(Answered(s, reply, s.sent + 0.2))
    assert r.book.drain(r.events) == []
    assert r.book.tick(time.monotonic() + 5) == []
    (a,) = r.book.tick(time.monotonic() + 11)
    assert a.details["why"] == "uncommitted" and a.severity == "warning"


def test_commits_of_unchallenged_nodes_cost_one_lookup_and_are_not_forced() -> None:
    r = Run()
    assert not r.book.on_commit(commit("n", 0, "ordinary", t=0.0))
    assert not r.book.nodes["n"].seen  # nothing kept while no challenge is open
    r.send()
    assert not r.book.on_commit(commit("n", 1, "ordinary", t=1.0))  # kept, not forced
    assert len(r.book.nodes["n"].seen) == 1


def test_serving_the_verifier_other_tokens_than_committed_is_critical() -> None:
    r = Run()
    assert r.challenge(latency=0.4, reference=0.2) == []  # served what it committed
    (lie,) = r.challenge(latency=0.4, reference=0.2, served=(5, 6, 8))
    assert lie.kind == "served_mismatch" and lie.severity == "critical"
    assert "differ from the 3 its committed record says" in lie.message
    (other,) = r.challenge(latency=0.4, reference=0.2, reply_seq=99)
    assert "the reply names record 99" in other.message
    # No replay to compare with (unopened, unverifiable): nothing is claimed about tokens.
    assert r.challenge(latency=0.4, reference=0.2, served=(1,), committed=None) == []
    assert r.book.totals()["served_mismatch"] == 2
