"""Which setup field to try first when attributing a mismatch, from what the evidence shows.

Ordering only: every candidate is still tried until one reproduces the record bit-exactly, so
a wrong hint costs replays, never a wrong attribution. The physics behind each hint
(docs/ENVIRONMENT.md, docs/CAPTURE.md):
- float32 probes whose low 16 (13) mantissa bits are all zero were computed in bfloat16
  (float16) and cast up: a node hiding its dtype;
- the prefill position (the last prompt token) identical while decode positions differ is what
  a batch-size change does in float32 decode on this CPU (prefill does not move);
- the first layer's keys identical while later layers differ is what an attention change does
  (layer 0's keys come before any attention); a dtype change moves layer 0 too.
"""

from __future__ import annotations

import numpy as np

from fpmon.compare import Comparison
from fpmon.records import TOPK_IDS, Record


def hidden_dtype(record: Record) -> str:
    """'bfloat16' / 'float16' when float32 probes carry only that many mantissa bits, else ''."""
    words = [
        b.raw().view(np.uint32).ravel()
        for n, b in record.probes.items()
        if n != TOPK_IDS and b.dtype == "float32"
    ]
    if not words:
        return ""
    w = np.concatenate(words)
    if not np.any(w & 0xFFFF):
        return "bfloat16"
    if not np.any(w & 0x1FFF):
        return "float16"
    return ""


def field_order(record: Record, comp: Comparison | None, fields: tuple[str, ...]) -> list[str]:
    """`fields`, the most likely first."""
    first: list[str] = []
    if hidden_dtype(record):
        first.append("dtype")
    if comp is not None:
        probes = {p.probe: p for p in comp.probes if p.probe != TOPK_IDS}
        moved = [p for p in probes.values() if not p.identical]
        if moved and all(p.per_position_rel[:1] == [0.0] for p in moved):
            first.append("batch_size")  # only decode positions moved
        l0 = probes.get("keys.L0")
        if l0 is not None and l0.identical and moved:
            first.append("attn_impl")
    return [f for f in first if f in fields] + [f for f in fields if f not in first]
