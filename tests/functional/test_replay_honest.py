"""Honest load judged by the daemon's judge: no false positives at mixed lengths and batch sizes
(bench/false_positives.py counts 1,000; this counts 100), and the count does see a lie."""

from __future__ import annotations

import dataclasses
import random

import pytest

from fpmon.replay.attribution import cast_probes
from fpmon.replay.calibration import Calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.honest import commit_of, judge_honest, request_mix, serve_batch
from fpmon.replay.judge import Judge, JudgeOptions


def daemon_judge() -> Judge:
    # The daemon's own reference engines (not the provers'), attribution on.
    return Judge(EngineCache({"tiny": "tiny"}), Calibration(), JudgeOptions())


@pytest.mark.slow
def test_a_hundred_honest_records_no_false_positive(tiny_engine) -> None:
    provers = {
        "f32": tiny_engine("float32", "sdpa"),
        "bf16": tiny_engine("bfloat16", "sdpa"),
        "eager": tiny_engine("bfloat16", "eager"),
    }
    tally = judge_honest(daemon_judge(), provers, 100, seed=3)
    assert tally.records == 100
    assert tally.mismatches == 0, tally.to_map()["not_match"]
    assert len(tally.by_batch) >= 3 and max(tally.by_batch) >= 4  # a real mix ran
    assert tally.to_map()["rate_upper95"] == pytest.approx(0.03, abs=1e-3)


def test_the_count_sees_a_record_that_lies(tiny_engine) -> None:
    bf16 = tiny_engine("bfloat16", "sdpa")
    prompts, steps = request_mix(random.Random(5), bf16.vocab_limit, bf16.max_positions)
    rec = serve_batch(bf16, [*prompts, [7, 8, 9]], max(steps, 3), "liar", 0)[-1]
    honest = daemon_judge().judge(commit_of(rec), rec.encode()).verdict
    assert honest.status == "match"
    lie = cast_probes(dataclasses.replace(rec, setup=rec.setup.replace(dtype="float32")),
                      dict.fromkeys(rec.probes, "float32"))  # fmt: skip
    v = daemon_judge().judge(commit_of(lie), lie.encode()).verdict
    assert v.status == "mismatch" and v.evidence.attribution_status == "exact"
