"""Capture: run prompts through an engine under a setup and build records.

Shared by `fpmon capture`, the agent, the lab and replay, so every side builds records the
same way.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from fpmon.engines.base import BatchRequest, BatchResult, Engine, ProbeSpec
from fpmon.engines.batching import build_rows
from fpmon.errors import FpmonError
from fpmon.progress import Progress
from fpmon.records import HIDDEN_PROBE, TOPK_IDS, Record


def record_from_row(
    engine: Engine,
    result: BatchResult,
    row: int,
    prompt_ids: list[int],
    probes: ProbeSpec,
    *,
    node: str,
    seq: int,
    request_id: str,
    t_start: float,
    t_end: float,
) -> Record:
    batch = len(result.schedule["row_lengths"])
    return Record(
        node=node,
        seq=seq,
        request_id=request_id,
        t_start=t_start,
        t_end=t_end,
        model=engine.model_name,
        weights_digest=engine.weights_digest,
        setup=engine.setup.replace(batch_size=batch, slot=row, cpu_threads=_cpu_threads(engine)),
        prompt_ids=list(prompt_ids),
        output_ids=list(result.rows[row].output_ids),
        schedule=result.schedule,
        probes=result.rows[row].probes,
        layers=list(probes.layers),
        timings={"prefill_s": result.prefill_s, "decode_s": result.decode_s},
    )


def _cpu_threads(engine: Engine) -> int:
    if engine.setup.device != "cpu":
        return 0
    import torch

    return int(torch.get_num_threads())


def capture_prompts(
    engine: Engine,
    prompts: Sequence[str],
    *,
    batch_size: int = 1,
    slot: int = 0,
    decode_steps: int = 16,
    probes: ProbeSpec,
    node: str = "local",
    progress: Progress | None = None,
) -> list[Record]:
    if not 0 <= slot < batch_size:
        raise FpmonError(
            f"--slot {slot} is outside a batch of {batch_size}: use 0 to {batch_size - 1}"
        )
    if not prompts:
        raise FpmonError("no prompts: give --prompt TEXT or --prompts FILE with one per line")
    records = []
    for i, text in enumerate(prompts):
        ids = engine.encode(text)
        if not ids:
            raise FpmonError(f"prompt {i + 1} is empty after tokenisation")
        rows = build_rows(ids, batch_size, slot, engine.vocab_limit)
        t0 = time.time()
        result = engine.run_batch(
            BatchRequest(rows=rows, decode_steps=decode_steps, probe_rows=[slot], probes=probes)
        )
        records.append(
            record_from_row(
                engine,
                result,
                slot,
                ids,
                probes,
                node=node,
                seq=i,
                request_id=uuid.uuid4().hex,
                t_start=t0,
                t_end=time.time(),
            )
        )
        if progress:
            progress.update(i + 1, len(prompts), "capturing")
    return records


def probe_spec_of(record: Record) -> ProbeSpec:
    """The probe spec that produced `record`, so a replay extracts exactly the same tensors."""
    top = record.probes.get(TOPK_IDS)
    return ProbeSpec(
        tuple(record.layers),
        topk=top.shape[-1] if top is not None else 8,
        keys=any(name.startswith("keys.") for name in record.probes),
        hidden=HIDDEN_PROBE in record.probes,
        logits=top is not None,
    )
