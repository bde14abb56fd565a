"""Judging one challenge: the node's end-to-end latency, timed by the verifier, against the
verifier's own replay of the same record under the declared setup.

    expected_s = reference_s + queue_s
    over       = latency_s > max_ratio * expected_s + slack_s

`reference_s` is the reference's prefill + decode for the record (its batch shape, fillers in
the other rows). `queue_s` is the work the node committed while the challenge was in flight:
batches other than the challenge's own, earlier in its log (`seq` below the challenge's), whose
commitments arrived after the challenge was sent. Each counts its committed time, but never more
than the challenge had been waiting when that commitment arrived: a batch cannot have delayed
the challenge longer than that. So an honest node under load is not accused for queueing behind
real traffic; the work it queued behind is committed work, sampled and timed like any other
(replay/timing.py judges whether those committed times are honest). Work it did not commit
explains nothing. `slack_s` covers the fixed costs no replay has: the batcher's wait, the
record's probes and log write (fsync), transport.

The defaults are the measured honest spread of this repository's test fleet (a real agent,
tiny model, CPU, on the shared 2-core development host at load average 15-25; bench
/challenge_spread.py; docs/REPLAY.md, "Verifier-timed challenges", has every run):
896 honest challenges at 0-6 requests/s of client load had latency / reference from 0.07 to
22 (queueing: the raw ratio is no measure under load) and latency / (reference + queue) from
0.07 to 19 (median 0.92; the tail is the host stalling), and would have needed up to 2.2 s of
slack at ratio 1.5 to stay inside the band one by one. With `max_ratio` 1.5 and `slack_s` 0.5,
43 of them (4.8%) were over, never more than 4 in any 7 in a row (stalls come in bursts), so
`confirm` 5 of `window` 7 raised nothing; covert work of 0.5 to 2 s per batch (hidden beside
0-3 requests/s of load) put 6-7 of 7 over and was alerted after the 5th to 22nd challenge.
On a dedicated GPU node the spread is far narrower: measure it there with the same bench and
tighten the band.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# The band (see the module's docstring for the measurement behind it).
MAX_RATIO = 1.5
SLACK_S = 0.5
CONFIRM = 5  # over-band challenges among a node's last WINDOW judged
WINDOW = 7


@dataclass(frozen=True)
class Seen:
    """A commitment as the challenge bookkeeping saw it arrive."""

    arrival: float  # monotonic, on the verifier
    seq: int
    t: float  # the node's commit time: one value per batch
    committed_s: float  # prefill_s + decode_s: one value per batch

    @property
    def batch(self) -> tuple[float, float]:
        return (self.t, self.committed_s)


def queue_seconds(seen: Iterable[Seen], own: Seen, sent: float, answered: float) -> float:
    """The node's committed work that the challenge plausibly waited behind (see the module)."""
    batches: dict[tuple[float, float], float] = {}
    for c in seen:
        if c.seq >= own.seq or c.arrival < sent or c.batch == own.batch:
            continue
        waited = min(c.arrival, answered) - sent
        batches[c.batch] = max(batches.get(c.batch, 0.0), min(c.committed_s, waited))
    # Batches that ran side by side (a sidecar's concurrent requests) overlap in time: their
    # sum can exceed the wait itself, which would excuse any latency. Never more than waited.
    return min(sum(batches.values()), max(answered - sent, 0.0))


@dataclass(frozen=True)
class Band:
    max_ratio: float = MAX_RATIO
    slack_s: float = SLACK_S


@dataclass(frozen=True)
class Judged:
    latency_s: float
    reference_s: float
    committed_s: float
    queue_s: float
    limit_s: float
    over: bool

    @property
    def ratio(self) -> float:
        """Latency over the reference time alone: the figure the measured spread is of."""
        return self.latency_s / self.reference_s

    @property
    def loaded_ratio(self) -> float:
        return self.latency_s / (self.reference_s + self.queue_s)

    @property
    def unexplained_s(self) -> float:
        """Latency the node's own committed times (its record's and those it queued behind)
        leave out. Honest: the fixed costs (`slack_s`). Far more: the node spent time on the
        request that its commitment does not admit to."""
        return self.latency_s - self.queue_s - self.committed_s

    def details(self, band: Band) -> dict[str, Any]:
        return {
            "latency_s": round(self.latency_s, 4),
            "reference_s": round(self.reference_s, 4),
            "committed_s": round(self.committed_s, 4),
            "queue_s": round(self.queue_s, 4),
            "ratio": round(self.ratio, 3),
            "loaded_ratio": round(self.loaded_ratio, 3),
            "limit_s": round(self.limit_s, 4),
            "max_ratio": band.max_ratio,
            "slack_s": band.slack_s,
            "unexplained_s": round(self.unexplained_s, 4),
        }


def judge(
    latency_s: float, reference_s: float, committed_s: float, queue_s: float, band: Band
) -> Judged:
    limit = band.max_ratio * (reference_s + queue_s) + band.slack_s
    return Judged(latency_s, reference_s, committed_s, queue_s, limit, latency_s > limit)
