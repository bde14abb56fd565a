"""Rebuilding logged commitments from a real log: what a restart republishes, and what not."""

from __future__ import annotations

import sqlite3
import time

import msgspec

from fpmon import canonical
from fpmon.agents.republish import logged_tail
from fpmon.agents.store import RecordLog
from fpmon.records import Record
from fpmon.setups import Setup
from fpmon.tensors import Blob
from fpmon.wire import Commit


def _record(seq: int) -> Record:
    return Record(
        node="n",
        seq=seq,
        request_id=f"req-{seq}",
        t_start=100.0 + seq,
        t_end=101.5 + seq,
        model="tiny",
        weights_digest="w" * 64,
        setup=Setup(batch_size=2, slot=seq % 2, cpu_threads=1),
        prompt_ids=list(range(3 + seq)),
        output_ids=[7] * 4,
        schedule={"padding": "left"},
        probes={"hidden.final": Blob("int32", (1,), seq.to_bytes(4, "little"))},
        layers=[0],
        timings={"prefill_s": 0.25 + seq, "decode_s": 1.5},
    )


def _as_worker_commits(log: RecordLog, recs: list[Record]) -> list[Commit]:
    """Append as the engine loop does and return the commitments it would publish."""
    items = []
    for r in recs:
        data = canonical.pack(r.to_map())
        items.append((r.request_id, canonical.digest(data), data, len(r.output_ids)))
    out = []
    for r, a in zip(recs, log.append(items), strict=True):
        out.append(
            Commit(
                node="n",
                t=0.0,
                seq=a.seq,
                request_id=r.request_id,
                record_digest=a.digest,
                chain=a.chain,
                setup=r.setup.to_map(),
                model=r.model,
                prompt_tokens=len(r.prompt_ids),
                output_tokens=len(r.output_ids),
                prefill_s=r.timings["prefill_s"],
                decode_s=r.timings["decode_s"],
            )
        )
    return out


def _no_t(cs: list[Commit]) -> list[Commit]:
    return [msgspec.structs.replace(c, t=0.0) for c in cs]


def test_tail_rebuilds_the_same_commitments_the_worker_published(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n")
    want = _as_worker_commits(log, [_record(i) for i in range(10)])
    tail = logged_tail(log, "n", limit=4)  # never marked: the last `limit`
    assert _no_t(tail.commits) == want[6:]
    assert all(abs(c.t - time.time()) < 60 for c in tail.commits)  # the logged time


def test_tail_starts_after_the_last_published_head(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n")
    want = _as_worker_commits(log, [_record(i) for i in range(10)])
    log.mark_published(7)
    assert log.published_head() == 7
    assert _no_t(logged_tail(log, "n", limit=100).commits) == want[8:]
    log.mark_published(9)
    assert logged_tail(log, "n", limit=100).commits == []
    # The cap still bounds a long unpublished run.
    log.mark_published(-1)
    assert [c.seq for c in logged_tail(log, "n", limit=3).commits] == [7, 8, 9]


def test_purged_and_corrupt_bodies_are_skipped_and_counted(tmp_path):
    path = tmp_path / "r.sqlite"
    log = RecordLog(path, node="n")
    want = _as_worker_commits(log, [_record(i) for i in range(6)])
    db = sqlite3.connect(path)
    db.execute("UPDATE records SET data=NULL WHERE seq=2")  # as retention does
    db.execute("UPDATE records SET data=? WHERE seq=4", (b"\x80bad",))
    db.commit()
    db.close()
    tail = logged_tail(log, "n", limit=100)
    assert _no_t(tail.commits) == [want[i] for i in (0, 1, 3, 5)]
    assert (tail.purged, tail.corrupt, tail.first_seq) == (1, 1, 0)
