"""The judge on real records: exact mode, cross-device bands, contradictions, unverifiable."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from fpmon.records import Record
from fpmon.replay import calibration
from fpmon.replay.engines import EngineCache
from fpmon.replay.judge import Judge, JudgeOptions
from fpmon.testing.fleet import ProverNode
from tests.conftest import tiny_engine

H100 = "NVIDIA H100 80GB HBM3"


def shared(spec, setup, device):
    return tiny_engine(setup.dtype, setup.attn_impl)


@pytest.fixture(scope="module")
def node():
    n = ProverNode("j1")
    yield n
    n.close()


def judge_with(cal: calibration.Calibration | None = None) -> Judge:
    cal = cal or calibration.Calibration()
    return Judge(EngineCache({"tiny": "tiny"}, factory=shared), cal, JudgeOptions(False))


def cal_file(tmp: Path, max_rel: float, digest: str) -> calibration.Calibration:
    doc = {
        "schema": 1,
        "model": "tiny",
        "weights_digest": digest,
        "pairs": {
            f"{H100}|cpu": {
                "layers": {"keys.L1": {"max_rel": max_rel}},
                "default": {"max_rel": max_rel},
                "timing": {"jitter_rel": 0.2},
            }
        },
    }
    p = tmp / "calibration.json"
    p.write_text(json.dumps(doc))
    return calibration.load(p)


def as_gpu(node: ProverNode, engine, ids, **declare):
    """A record that declares it ran on an H100 (the reference here is the CPU)."""
    c = node.make(engine, ids, declare={"gpu_name": H100, "device": "cuda", **declare})
    return c, node.records[c.seq]


def test_cross_device_uses_the_band_and_says_so(node, tmp_path) -> None:
    e = tiny_engine("bfloat16", "eager")
    ids = e.encode("bands between GPUs")
    # Ran eager, declares sdpa, on "another GPU": a real numerical difference.
    c, data = as_gpu(node, e, ids, attn_impl="sdpa")
    wide = judge_with(cal_file(tmp_path, 1.0, e.weights_digest)).judge(c, data)
    assert wide.verdict.status == "within_noise" and wide.verdict.cross_gpu
    assert wide.verdict.evidence.mode == "band" and wide.jitter_rel == 0.2
    narrow = judge_with(cal_file(tmp_path, 1e-9, e.weights_digest)).judge(c, data)
    assert narrow.verdict.status == "mismatch" and narrow.verdict.evidence.over_band
    none = judge_with().judge(c, data)
    assert none.verdict.status == "mismatch"
    assert "bit-exactness demanded" in none.verdict.reason
    other_model = judge_with(cal_file(tmp_path, 1.0, "0" * 64)).judge(c, data)
    assert other_model.verdict.status == "mismatch"  # a band of another model does not apply


def test_cross_device_identical_is_a_match_marked_cross(node) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c, data = as_gpu(node, e, e.encode("same numbers"))
    v = judge_with().judge(c, data).verdict
    assert (v.status, v.cross_gpu) == ("match", True)
    assert "cross-device" in v.reason


def test_record_contradicting_its_commitment_is_bad_opening(node) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("consistent?"))
    rec = Record.decode(node.records[c.seq])
    other = dataclasses.replace(rec, request_id="someone-else").encode()
    v = judge_with().judge(c, other).verdict
    assert v.status == "bad_opening" and "request_id" in v.reason
    assert judge_with().judge(c, b"\x01\x02").verdict.status == "bad_opening"


def test_other_weights_and_unknown_engines_are_unverifiable(node) -> None:
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("weights"))
    rec = Record.decode(node.records[c.seq])
    swapped = dataclasses.replace(rec, weights_digest="f" * 64)
    v = judge_with().judge(c, swapped.encode()).verdict
    assert v.status == "unverifiable" and "weights" in v.reason
    c2 = node.make(e, e.encode("tgi"), declare={"engine": "tgi"})
    v2 = judge_with().judge(c2, node.records[c2.seq]).verdict
    assert v2.status == "unverifiable" and "tgi" in v2.reason


def test_served_tokens_must_be_the_greedy_choice() -> None:
    from fpmon.capture import capture_prompts
    from fpmon.engines.base import ProbeSpec
    from fpmon.wire import Commit

    eng = tiny_engine()
    rec = capture_prompts(eng, ["The treaty requires"], decode_steps=4, probes=ProbeSpec((1,)))[0]

    def commit_for(r: Record) -> Commit:
        return Commit(
            node=r.node,
            t=0.0,
            seq=r.seq,
            request_id=r.request_id,
            record_digest=r.digest(),
            chain=b"\0" * 32,
            setup=r.setup.to_map(),
            model=r.model,
            prompt_tokens=len(r.prompt_ids),
            output_tokens=len(r.output_ids),
        )

    judge = judge_with()
    assert judge.judge(commit_for(rec), rec.encode()).verdict.status == "match"
    top = rec.probes["logits.topk.ids"].raw()
    # A node that computed honestly on tokens it did not choose greedily (it sampled, or
    # swapped in an answer): its probes are consistent with the tokens it fed.
    from fpmon.reproduce import replay_record

    lied = dataclasses.replace(
        rec, output_ids=[*rec.output_ids[:2], int(top[2][-1]), *rec.output_ids[3:]]
    )
    forged = replay_record(eng, lied)
    v = judge.judge(commit_for(forged), forged.encode()).verdict
    assert v.status == "mismatch"
    # Position 2 first; later original tokens no longer follow from the changed context.
    assert v.evidence.not_greedy[0] == 2 and "greedy" in v.reason
