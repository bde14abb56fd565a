"""The agent's engine loop builds each batch's row manifest from the rows its engine ran."""

from __future__ import annotations

import queue
import time

import pytest
import zmq

from fpmon import manifest
from fpmon.agents.config import AgentConfig, EngineConfig, RedTeamConfig
from fpmon.agents.parts import parts_for
from fpmon.agents.store import RecordLog
from fpmon.agents.worker import Job, Worker
from fpmon.engines.base import ProbeSpec
from fpmon.records import Record
from fpmon.replay.rows import check_record, check_tokens
from fpmon.wire import Commit, SubmitReply, SubmitRequest, decode
from fpmon.wire.codec import payload
from fpmon.wire.messages import ClientRequest


@pytest.fixture
def make_worker(tmp_path, tiny_engine):
    made = []

    def make(redteam: RedTeamConfig | None = None) -> tuple[Worker, queue.Queue]:
        cfg = AgentConfig(
            node="n", state_dir=tmp_path / str(len(made)), engine=EngineConfig(dtype="bfloat16")
        )
        cfg.state_dir.mkdir()
        store = RecordLog(cfg.db_path, node="n")
        commits: queue.Queue[Commit | None] = queue.Queue()
        ctx = zmq.Context()
        make_worker = parts_for(redteam or RedTeamConfig(), "n").worker  # as the agent does
        w = make_worker(cfg, tiny_engine(), store, ctx, "inproc://r", commits, ProbeSpec((0,)))
        made.append((store, ctx))
        return w, commits

    yield make
    for store, ctx in made:
        store.close()
        ctx.term()


def job(rid: str, prompt: str = "", ids: list[int] | None = None, key: str = "") -> Job:
    req = SubmitRequest(
        node="c", t=time.time(), request_id=rid, prompt=prompt, max_tokens=3, prompt_ids=ids
    )
    # As the intake hands it over: the client's bytes as received and its Curve key.
    return Job([b"peer"], req, time.monotonic(), ClientRequest(client=key, submit=payload(req)))


def served(w: Worker, commits: queue.Queue, jobs: list[Job]) -> list[tuple[Commit, Record]]:
    replies = [decode(f[1:]) for f in w.serve(jobs)]
    assert all(isinstance(r, SubmitReply) and r.status == "ok" for r in replies), replies
    out = []
    while not commits.empty():
        c = commits.get()
        status, data = w.store.get(c.seq)
        assert status == "ok" and data is not None
        out.append((c, Record.decode(data)))
    return out


def test_an_honest_batch_lists_every_request_with_its_clients_digest(
    make_worker, tiny_engine
) -> None:
    w, commits = make_worker()
    jobs = [job("a", "first request", key="K" * 40), job("b", ids=[5, 6, 7]), job("c", "third")]
    got = served(w, commits, jobs)
    assert len(got) == 3
    for i, (c, rec) in enumerate(got):
        assert rec.manifest is not None and len(rec.manifest) == 3 == rec.setup.batch_size
        assert [r.request_id for r in rec.manifest] == ["a", "b", "c"]
        assert rec.manifest == got[0][1].manifest and c.manifest == manifest.root(rec.manifest)
        assert rec.request == jobs[i].request
        assert rec.manifest[i].digest == manifest.request_digest(jobs[i].client_request())
        rows = check_record(rec)
        check_tokens(rec, tiny_engine().encode, rows)
        assert not rows.findings, rows.findings
    assert got[1][1].prompt_ids == [5, 6, 7]  # token ids as the client sent them
    assert got[0][1].request.client == "K" * 40  # type: ignore[union-attr]


def test_token_ids_and_text_together_or_outside_the_vocabulary_are_refused(make_worker) -> None:
    w, _ = make_worker()
    both = decode(w.serve([job("x", "text", ids=[5])])[0][1:])
    assert isinstance(both, SubmitReply) and both.status == "rejected" and "not both" in both.reason
    big = decode(w.serve([job("y", ids=[10**6])])[0][1:])
    assert isinstance(big, SubmitReply) and big.status == "rejected" and "vocabulary" in big.reason


@pytest.mark.parametrize(
    ("hide_rows", "batch", "rows", "findings"),
    [
        ("", 1, 4, ["the manifest lists 4 rows", "rows 1, 2, 3 of 4 ran with no client request"]),
        ("strip", 1, 1, []),  # the blind spot: nothing in the record contradicts batch 1
        ("forge", 4, 4, []),  # consistent in itself: its siblings' commitments contradict it
    ],
)
def test_the_batch_cheat_in_the_manifest(make_worker, hide_rows, batch, rows, findings) -> None:
    w, commits = make_worker(RedTeamConfig(enabled=True, actual_batch=4, hide_rows=hide_rows))
    ((c, rec),) = served(w, commits, [job("only", "a covert batch")])
    assert (rec.setup.batch_size, len(rec.manifest or ())) == (batch, rows)
    assert c.manifest == manifest.root(rec.manifest)
    got = check_record(rec).findings
    assert len(got) == len(findings) and all(f in g for f, g in zip(findings, got, strict=True))
    if hide_rows == "forge":
        assert all(r.request_id and len(r.digest) == 32 for r in rec.manifest or ())
