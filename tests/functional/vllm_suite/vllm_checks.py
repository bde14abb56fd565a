"""Checks on the REAL vLLM engine (tiny model, CPU). Run only in their own process.

`tests/functional/test_vllm_engine.py` launches this file with `python -m pytest` in a
subprocess: vLLM's CPU worker sets torch to one thread, seeds the global RNG and binds memory
to a NUMA node in the process that hosts it, which must not leak into the other tests.
One engine for the whole session (bfloat16, small token budget so prefills are chunked).
"""

from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path

import msgspec
import pytest

from fpmon.capture import capture_prompts, record_from_row
from fpmon.compare import compare_records
from fpmon.engines.base import BatchRequest, ProbeSpec
from fpmon.errors import FpmonError, ModelError
from fpmon.records import Record, save_fingerprint
from fpmon.reproduce import replay_record

OUT = Path(os.environ.get("FPMON_VLLM_OUT", "/tmp"))
SHORT = "The quick brown fox"  # one prefill chunk under a 16-token budget
PROMPTS = [
    SHORT,
    "A longer prompt that needs several prefill chunks when the budget is small",
    "Continuous batching mixes prefill chunks with decode steps of other requests in one step",
    "and a fourth request that arrives late",
]
PROBES = ProbeSpec((0, 2, 5), topk=8)
STEPS = 8


@pytest.fixture(scope="session")
def engine():
    from fpmon.engines.vllm import VLLMEngine

    eng = VLLMEngine("tiny", dtype="bfloat16", max_num_batched_tokens=16, max_num_seqs=8)
    yield eng
    eng.close()


def _records(eng, result, rows, prompts) -> list[Record]:
    return [
        record_from_row(
            eng,
            result,
            r,
            prompts[r],
            PROBES,
            node="t",
            seq=r,
            request_id=f"r{r}",
            t_start=0.0,
            t_end=0.0,
        )
        for r in rows
    ]


@pytest.fixture(scope="session")
def loaded(engine) -> list[Record]:
    """Four requests arriving at steps 0, 1, 2, 4 under a 16-token budget."""
    ids = [engine.encode(p) for p in PROMPTS]
    req = BatchRequest(rows=ids, decode_steps=STEPS, probe_rows=[0, 1, 2, 3], probes=PROBES)
    result = engine.run_batch(req, arrivals=[0, 1, 2, 4])
    recs = _records(engine, result, [0, 1, 2, 3], ids)
    save_fingerprint(OUT / "vllm-load.fp", recs, {"prompts": PROMPTS})
    return recs


def test_setup_names_vllm(engine):
    assert engine.setup.engine == "vllm"
    assert engine.setup.engine_version == "0.32.0"
    assert engine.setup.dtype == "bfloat16"


def test_probes_have_hf_names_and_shapes(loaded):
    rec = loaded[1]
    assert sorted(rec.probes) == sorted(
        ["keys.L0", "keys.L2", "keys.L5", "hidden.final", "logits.topk.values", "logits.topk.ids"]
    )
    assert rec.probes["keys.L2"].shape == (STEPS + 1, 128)
    assert rec.probes["hidden.final"].shape == (STEPS + 1, 256)
    assert rec.probes["logits.topk.ids"].shape == (STEPS + 1, 8)
    assert len(rec.output_ids) == STEPS + 1


def test_load_schedule_is_what_vllm_ran(loaded):
    sched = loaded[0].schedule
    assert sched["kind"] == "vllm"
    steps = sched["steps"]
    assert all(s["tokens"] <= 16 for s in steps)
    # Prefill chunks and decodes share steps: some step holds a 1-token decode beside a chunk.
    mixed = [
        s
        for s in steps
        if any(n == 1 for _r, n in s["sched"]) and any(n > 1 for _r, n in s["sched"])
    ]
    assert mixed, steps
    assert max(s["seqs"] for s in steps) >= 3
    assert sched["arrivals"][3] >= 4  # the late request was not scheduled before it arrived
    # Every request's tokens add up: prompt chunks, then one token per decode step.
    for r, (n, out) in enumerate(zip(sched["row_lengths"], sched["output_lengths"], strict=True)):
        assert sum(k for s in steps for rr, k in s["sched"] if rr == r) == n + out - 1


def test_repeat_is_bit_identical(engine, loaded):
    ids = [engine.encode(p) for p in PROMPTS]
    req = BatchRequest(rows=ids, decode_steps=STEPS, probe_rows=[0, 1, 2, 3], probes=PROBES)
    again = _records(engine, engine.run_batch(req, arrivals=[0, 1, 2, 4]), [0, 1, 2, 3], ids)
    for a, b in zip(loaded, again, strict=True):
        assert a.schedule == b.schedule
        assert compare_records(a, b).identical


@pytest.mark.parametrize("row", [0, 1, 2, 3])
def test_loaded_record_replays_bit_identically(engine, loaded, row):
    rec = Record.decode(loaded[row].encode())  # through the wire format, as a verifier gets it
    replayed = replay_record(engine, rec)
    assert replayed.schedule == rec.schedule  # the replay ran the recorded steps
    assert replayed.output_ids == rec.output_ids
    cmp = compare_records(rec, replayed)
    assert cmp.identical, [(p.probe, p.rel) for p in cmp.differing()]
    # Everything but the wall-clock timings is the same record.
    same = dataclasses.replace(replayed, timings=rec.timings)
    assert same.digest() == rec.digest()


def _tampered(rec: Record, edit) -> Record:
    sched = copy.deepcopy(rec.schedule)
    edit(sched)
    return dataclasses.replace(rec, schedule=sched)


def test_inconsistent_schedule_is_refused(engine, loaded):
    def drop_a_token(s):
        s["steps"][0]["sched"][0][1] -= 1

    with pytest.raises(FpmonError, match="cannot be rebuilt"):
        replay_record(engine, _tampered(loaded[0], drop_a_token))


def test_schedule_vllm_cannot_follow_is_refused(engine, loaded):
    steps = loaded[1].schedule["steps"]
    # A step where a waiting request is scheduled beside a running one: vLLM always serves
    # running requests first, so the reversed order cannot be produced.
    at = next(i for i, s in enumerate(steps) if len(s["sched"]) == 2 and s["sched"][1][1] > 1)

    def reverse(s):
        s["steps"][at]["sched"].reverse()

    with pytest.raises(FpmonError, match=f"cannot be rebuilt: at step {at}"):
        replay_record(engine, _tampered(loaded[1], reverse))
    # The engine is still usable afterwards.
    assert compare_records(loaded[1], replay_record(engine, loaded[1])).identical


def test_solo_capture_and_hf_differs(engine):
    """Writes the solo record the outer test compares across processes and dtypes."""
    recs = capture_prompts(engine, [SHORT], decode_steps=STEPS, probes=PROBES, node="t")
    save_fingerprint(OUT / "vllm-solo.fp", recs, {"prompts": [SHORT]})
    from fpmon.engines.hf import HFEngine

    hf = HFEngine("tiny", dtype="bfloat16", attn_impl="sdpa")
    hrec = capture_prompts(hf, [SHORT], decode_steps=STEPS, probes=PROBES, node="t")[0]
    # Teacher-force HF on vLLM's tokens so both compare the same text.
    forced = capture_teacher_forced(hf, recs[0])
    assert not compare_records(recs[0], forced).identical
    assert hrec.setup.engine == "hf"


def capture_teacher_forced(hf, rec: Record) -> Record:
    req = BatchRequest(
        rows=[rec.prompt_ids],
        decode_steps=len(rec.output_ids) - 1,
        probe_rows=[0],
        probes=PROBES,
        forced=[rec.output_ids],
    )
    res = hf.run_batch(req)
    return record_from_row(
        hf,
        res,
        0,
        rec.prompt_ids,
        PROBES,
        node="t",
        seq=0,
        request_id="hf",
        t_start=0.0,
        t_end=0.0,
    )


def test_hf_record_refused_by_vllm_replay_and_vice_versa(engine, loaded):
    from fpmon.engines.hf import HFEngine

    hf = HFEngine("tiny", dtype="bfloat16")
    with pytest.raises(FpmonError, match="--engine vllm"):
        replay_record(hf, loaded[0])


@pytest.mark.skipif(
    not os.environ.get("FPMON_VLLM_SERVER_FP"), reason="no records from a served vLLM given"
)
def test_records_from_a_served_vllm_replay_bit_identically(engine):
    """Records the sidecar took from `vllm serve` (windows of a stream) replay here exactly."""
    from fpmon.records import load_fingerprint

    records, _meta = load_fingerprint(Path(os.environ["FPMON_VLLM_SERVER_FP"]))
    assert records
    for rec in records:
        replayed = replay_record(engine, rec)
        cmp = compare_records(rec, replayed)
        assert cmp.identical, (rec.request_id, [(p.probe, p.rel) for p in cmp.differing()])


def test_model_vllm_cannot_load(tmp_path):
    import json
    import shutil

    from fpmon.engines.vllm import VLLMEngine
    from fpmon.models import tiny_folder

    bad = tmp_path / "nope"
    shutil.copytree(tiny_folder(), bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["architectures"] = ["NoSuchModelForCausalLM"]
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelError, match="vLLM cannot load the model"):
        VLLMEngine(str(bad), dtype="bfloat16")


def test_replay_daemon_judges_vllm_records(engine, loaded):
    """The verifier's judge replays a vLLM record through its engine cache: the honest record
    matches; one whose served tokens are not the greedy choice is a mismatch."""
    from fpmon.replay.calibration import Calibration
    from fpmon.replay.engines import EngineCache
    from fpmon.replay.judge import Judge, JudgeOptions
    from fpmon.wire import Commit

    def session_engine(spec, setup, device):
        assert setup.engine == "vllm" and setup.dtype == "bfloat16"
        return engine  # vLLM hosts one engine per process: the suite's real one

    # Captured records have no client, so no row manifest: checked where present only.
    opts = JudgeOptions(False, manifests="check")
    judge = Judge(EngineCache({"tiny": "tiny"}, factory=session_engine), Calibration(), opts)
    rec = loaded[1]
    commit = Commit(
        node=rec.node,
        t=0.0,
        seq=rec.seq,
        request_id=rec.request_id,
        record_digest=rec.digest(),
        chain=b"\0" * 32,
        setup=rec.setup.to_map(),
        model=rec.model,
        prompt_tokens=len(rec.prompt_ids),
        output_tokens=len(rec.output_ids),
    )
    verdict = judge.judge(commit, rec.encode()).verdict
    assert verdict.status == "match", verdict.reason
    forged = dataclasses.replace(rec, output_ids=[*rec.output_ids[:-1], rec.output_ids[-1] + 1])
    commit = msgspec.structs.replace(commit, record_digest=forged.digest())
    assert judge.judge(commit, forged.encode()).verdict.status == "mismatch"
