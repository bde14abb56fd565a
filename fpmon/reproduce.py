"""Faithful replay of one record: same batch shape, request in its slot, teacher-forced decode.

The verifier and the lab both call this, with the same probe code the prover ran.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from fpmon.capture import probe_spec_of, record_from_row
from fpmon.engines.base import BatchRequest, Engine
from fpmon.engines.batching import build_rows
from fpmon.errors import FpmonError
from fpmon.records import Record


def replay_record(
    engine: Engine,
    record: Record,
    *,
    batch_size: int | None = None,
    slot: int | None = None,
    co_batched: dict[int, list[int]] | None = None,
    deadline: float | None = None,
) -> Record:
    """Replay `record` on `engine`. batch_size/slot override the declared shape (attribution).

    `deadline` (time.monotonic()) stops a static replay between decode steps with `OverBudget`;
    a vLLM schedule replays whole, bounded by the verifier's caps on batch and tokens only.
    """
    if record.weights_digest != engine.weights_digest:
        raise FpmonError(
            f"record was made with weights {record.weights_digest[:12]}…, the engine holds "
            f"{engine.weights_digest[:12]}…: load the model the record names ({record.model})"
        )
    sched = record.schedule
    if sched.get("kind") == "vllm":  # issue 7: vLLM records replay their recorded schedule
        from fpmon.engines.vllm.replay import replay_vllm_record

        return replay_vllm_record(
            engine, record, batch_size=batch_size, slot=slot, co_batched=co_batched
        )
    if sched.get("kind") != "static":
        raise FpmonError(f"cannot rebuild a {sched.get('kind')!r} schedule with this engine")
    with _declared_threads(engine, record):
        return _replay_static(engine, record, batch_size, slot, co_batched, deadline)


@contextmanager
def _declared_threads(engine: Engine, record: Record) -> Iterator[None]:
    """Run a CPU replay with the thread count the record declares (it moves float32 numerics)."""
    want = record.setup.cpu_threads
    if want <= 0 or engine.setup.device != "cpu":
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(want)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _replay_static(
    engine: Engine,
    record: Record,
    batch_size: int | None,
    slot: int | None,
    co_batched: dict[int, list[int]] | None,
    deadline: float | None = None,
) -> Record:
    sched = record.schedule
    declared_bs = record.setup.batch_size
    bs = batch_size or declared_bs
    sl = record.setup.slot if slot is None else slot
    lengths = list(sched.get("row_lengths") or [len(record.prompt_ids)] * declared_bs)
    if len(lengths) != declared_bs or lengths[record.setup.slot] != len(record.prompt_ids):
        raise FpmonError("record's schedule does not match its declared batch: cannot rebuild it")
    if bs != declared_bs or sl != record.setup.slot:
        lengths = [len(record.prompt_ids)] * bs
    rows = build_rows(record.prompt_ids, bs, sl, engine.vocab_limit, lengths)
    for r, ids in (co_batched or {}).items():
        if r != sl and r < bs and len(ids) == lengths[r]:
            rows[r] = list(ids)
    steps = int(sched.get("decode_steps", len(record.output_ids) - 1))
    probes = probe_spec_of(record)
    forced: list[list[int] | None] = [None] * bs
    forced[sl] = list(record.output_ids)
    result = engine.run_batch(
        BatchRequest(
            rows=rows,
            decode_steps=steps,
            probe_rows=[sl],
            probes=probes,
            forced=forced,
            deadline=deadline,
        )
    )
    return record_from_row(
        engine,
        result,
        sl,
        record.prompt_ids,
        probes,
        node=record.node,
        seq=record.seq,
        request_id=record.request_id,
        t_start=record.t_start,
        t_end=record.t_end,
    )
