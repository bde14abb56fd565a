"""Replay cost caps on real records: refused before any replay, budgeted replay and attribution,
and who is made suspect by an `unverifiable` (the node's choice) and who is not (ours)."""

from __future__ import annotations

import dataclasses
import time

import msgspec
import pytest

from fpmon.errors import FpmonError
from fpmon.records import Record
from fpmon.replay import calibration
from fpmon.replay.attribution import BUDGET_SPENT, attribute
from fpmon.replay.engines import EngineCache
from fpmon.replay.judge import Judge, JudgeOptions
from fpmon.replay.limits import Caps
from fpmon.testing.fleet import ProverNode

FIELDS = ("batch_size", "attn_impl", "dtype")


@pytest.fixture(scope="module")
def node():
    n = ProverNode("caps")
    yield n
    n.close()


@pytest.fixture
def judge_with(shared_engines):
    def _judge_with(
        caps: Caps | None = None, attribution: bool = False, factory=shared_engines
    ) -> Judge:
        opts = JudgeOptions(attribution, FIELDS, (1, 2, 4), 16, caps or Caps())
        return Judge(
            EngineCache({"tiny": "tiny"}, factory=factory), calibration.Calibration(), opts
        )

    return _judge_with


def test_a_declared_batch_2048_is_refused_before_any_replay(node, tiny_engine, judge_with) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    # Ran batch 1, declares (and schedules) 2048: replayed as declared it took seconds and a GB.
    c = node.make(e, e.encode("huge"), declare={"batch_size": 2048})
    t0 = time.perf_counter()
    j = judge_with().judge(c, node.records[c.seq])
    took = time.perf_counter() - t0
    assert j.verdict.status == "unverifiable" and j.suspect
    assert "batch size 2048" in j.verdict.reason and "max_batch=256" in j.verdict.reason
    assert "suspect rate" in j.verdict.reason and j.verdict.replay_s == 0.0
    assert took < 1.0, took  # a replay at 2048 takes seconds on this host


def test_a_commitment_that_hides_the_batch_is_caught_on_the_record(
    node, tiny_engine, judge_with
) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("hidden batch"), declare={"batch_size": 512})
    quiet = msgspec.structs.replace(
        c, setup={k: v for k, v in c.setup.items() if k != "batch_size"}
    )
    judge = judge_with()
    assert judge.precheck(quiet) is None  # nothing on the commitment to refuse
    j = judge.judge(quiet, node.records[c.seq])
    assert j.verdict.status == "unverifiable" and "record's batch size 512" in j.verdict.reason


def test_tokens_cap_counts_prompt_and_output(node, tiny_engine, judge_with) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("a prompt of some tokens"), decode_steps=8)
    total = c.prompt_tokens + c.output_tokens
    j = judge_with(Caps(max_tokens=total - 1)).judge(c, node.records[c.seq])
    assert j.verdict.status == "unverifiable" and j.suspect
    assert f"{total} tokens" in j.verdict.reason and f"max_tokens={total - 1}" in j.verdict.reason
    assert judge_with(Caps(max_tokens=total)).judge(c, node.records[c.seq]).verdict.status == (
        "match"
    )


def test_filler_rows_longer_than_the_cap_are_refused(node, tiny_engine, judge_with) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("short request"), batch_size=2, slot=0)
    rec = Record.decode(node.records[c.seq])
    sched = {**rec.schedule, "row_lengths": [len(rec.prompt_ids), 40_000]}
    longer = dataclasses.replace(rec, schedule=sched)
    c2 = msgspec.structs.replace(c, record_digest=longer.digest())
    v = judge_with().judge(c2, longer.encode()).verdict
    assert v.status == "unverifiable" and "max_tokens=32768" in v.reason


def test_the_replay_stops_at_its_wall_clock_budget(node, tiny_engine, judge_with) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("budget"), decode_steps=8)
    j = judge_with(Caps(max_replay_s=1e-6)).judge(c, node.records[c.seq])
    assert j.verdict.status == "unverifiable" and j.suspect
    assert "max_replay_s=1e-06" in j.verdict.reason and "decode steps" in j.verdict.reason


def test_attribution_candidates_count_against_the_budget(node, tiny_engine, shared_engines) -> None:
    f32 = tiny_engine("float32", "sdpa")
    c = node.make(f32, f32.encode("batch lie"), batch_size=4, declare={"batch_size": 1})
    rec = Record.decode(node.records[c.seq])
    engines = EngineCache({"tiny": "tiny"}, factory=shared_engines)
    spent = attribute(engines, rec, FIELDS, (1, 2, 4), 16, deadline=time.monotonic() - 1)
    assert [(x.field, x.error) for x in spent.candidates] == [
        (spent.candidates[0].field, BUDGET_SPENT)
    ]
    assert spent.status == "budget" and "max_replay_s" in spent.note
    full = attribute(engines, rec, FIELDS, (1, 2, 4), 16, deadline=time.monotonic() + 60)
    assert full.candidates[0].exact and full.candidates[0].field == "batch_size"
    assert full.status == "exact"


def test_no_reference_makes_the_node_suspect_but_our_own_failure_does_not(
    node, tiny_engine, judge_with
) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("mystery"), model="mystery-7b")
    j = judge_with().judge(c, node.records[c.seq])
    assert j.verdict.status == "unverifiable" and j.suspect
    assert "mystery-7b" in j.verdict.reason and "suspect rate" in j.verdict.reason

    def broken(spec, setup, device):
        raise FpmonError("model folder /models/tiny is missing")

    c2 = node.make(e, e.encode("ours"))
    j2 = judge_with(factory=broken).judge(c2, node.records[c2.seq])
    assert j2.verdict.status == "unverifiable" and not j2.suspect
    assert "suspect" not in j2.verdict.reason
