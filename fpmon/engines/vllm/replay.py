"""Faithful replay of a vLLM record: the recorded run, step by step, teacher-forced.

The run is rebuilt with the same requests (the record's own prompt in its slot, co-batched
prompts when the verifier could open them, same-length fillers otherwise), each arriving at the
step where the record says it was first scheduled, and vLLM's scheduler follows the recorded
steps. What vLLM then actually scheduled and ran is compared with the record step by step: a
schedule that vLLM's own policy cannot produce is reported, not silently approximated.
"""

from __future__ import annotations

from typing import Any

from fpmon.capture import probe_spec_of, record_from_row
from fpmon.engines.batching import filler_ids
from fpmon.engines.vllm import schedule as vsched
from fpmon.errors import FpmonError
from fpmon.records import Record


def _first_difference(got: list[Any], want: list[Any]) -> str:
    for i, (g, w) in enumerate(zip(got, want, strict=False)):
        if list(g) != list(w):
            ran, declared = [list(x) for x in g], [list(x) for x in w]
            return f"at step {i} vLLM ran {ran}, the record declares {declared}"
    return f"vLLM ran {len(got)} steps, the record declares {len(want)}"


def replay_vllm_record(
    engine: Any,
    record: Record,
    *,
    batch_size: int | None = None,
    slot: int | None = None,
    co_batched: dict[int, list[int]] | None = None,
) -> Record:
    """Replay `record` (schedule kind "vllm") on a VLLMEngine, following its schedule."""
    from fpmon.engines.vllm.engine import VLLMEngine, VRequest

    if not isinstance(engine, VLLMEngine):
        raise FpmonError(
            "this record was made on vLLM and carries a vLLM schedule: replay it with the vLLM "
            "engine (--engine vllm)"
        )
    own = record.setup.slot
    if (batch_size not in (None, record.setup.batch_size)) or (slot not in (None, own)):
        raise FpmonError(
            "a vLLM record replays with the schedule it recorded: batch size and slot "
            "overrides do not apply to it"
        )
    plan = vsched.plan_of(record.schedule, own, len(record.prompt_ids), len(record.output_ids))
    if len(plan.row_lengths) != record.setup.batch_size:
        raise vsched._bad("its requests do not match the setup's declared batch size")
    limit = engine.config
    if plan.max_tokens > limit["max_num_batched_tokens"] or plan.max_seqs > limit["max_num_seqs"]:
        raise FpmonError(
            f"the record's schedule needs steps of up to {plan.max_tokens} tokens and "
            f"{plan.max_seqs} sequences; this vLLM engine allows {limit['max_num_batched_tokens']}"
            f" and {limit['max_num_seqs']}: start it with larger max_num_batched_tokens / "
            "max_num_seqs"
        )
    plan = plan.with_prelude(limit["max_num_batched_tokens"])
    reqs = []
    for i, (n, outs) in enumerate(zip(plan.row_lengths, plan.output_lengths, strict=True)):
        if i == own:
            prompt = list(record.prompt_ids)
        elif co_batched and len(co_batched.get(i, [])) == n:
            prompt = list(co_batched[i])
        else:
            prompt = filler_ids(n, i, engine.vocab_limit)
        forced = list(record.output_ids) if i == own else None
        # A co-batched request only has to last until its last recorded step.
        reqs.append(VRequest(prompt, max(outs, 1), forced, plan.arrivals[i]))
    probes = probe_spec_of(record)
    run = engine.run_requests(reqs, probes, plan)
    if [list(s) for s in run.sched_log] != [list(s) for s in plan.steps]:
        raise vsched._bad(_first_difference(run.sched_log, plan.steps))
    ran = run.ran_log[plan.prelude :]
    if plan.window:
        # Inside a stream the runner's row order depends on history before the window, which
        # replay does not rebuild; each step's rows must still hold the same requests/tokens.
        ran, want = [sorted(s) for s in ran], [sorted(s) for s in plan.ran]
    else:
        want = plan.ran
    if engine.capture and [list(s) for s in ran] != [list(s) for s in want]:
        raise vsched._bad("the model's row layout differs: " + _first_difference(ran, want))
    steps = int(record.schedule.get("decode_steps", len(record.output_ids) - 1))
    result = engine.result_of(reqs, run, [own], probes, steps)
    # Verified above: the recorded steps ran as declared (a window's prelude is not part of it).
    result.schedule = dict(record.schedule)
    return record_from_row(
        engine,
        result,
        own,
        record.prompt_ids,
        probes,
        node=record.node,
        seq=record.seq,
        request_id=record.request_id,
        t_start=record.t_start,
        t_end=record.t_end,
    )
