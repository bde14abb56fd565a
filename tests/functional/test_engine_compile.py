"""`compiled = true` on the HF engine: one compiled graph per shape class shared by every layer,
visible in the probes, and records that do not depend on which shapes a process compiled first
(a node and its verifier meet requests in different orders)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fpmon.engines.base import BatchRequest, ProbeSpec
from fpmon.engines.hf import HFEngine
from fpmon.models import load_model

# Four shape classes: batch 1, batch 1 again (longer: no new graph), batch 4, padded batch 2.
SHAPES = {
    "bs1": ([0], 4),
    "bs1-long": ([0, 1], 6),
    "bs4": ([0, 0, 0, 0], 4),
    "ragged": ([0, 2], 5),
}

_RUN = r"""
import hashlib, json, sys
import torch
torch.set_num_threads(1)
from fpmon.engines.base import BatchRequest, ProbeSpec
from fpmon.engines.hf import HFEngine
shapes = json.loads(sys.argv[1])
eng = HFEngine("tiny", dtype="bfloat16", compiled=True)
ids = eng.encode("The treaty requires the parties to")
prompts = [ids, ids + ids[:3], ids[:3]]
spec = ProbeSpec(layers=tuple(range(eng.num_layers)))
out = {}
for name, (rows, steps) in shapes:
    req = BatchRequest(rows=[prompts[r] for r in rows], decode_steps=steps,
                       probe_rows=list(range(len(rows))), probes=spec)
    res = eng.run_batch(req)
    h = hashlib.sha256(repr(res.all_outputs).encode())
    for ri in sorted(res.rows):
        for k in sorted(res.rows[ri].probes):
            h.update(res.rows[ri].probes[k].data)
    out[name] = h.hexdigest()
print(json.dumps(out))
"""


def _prompts(eng: HFEngine) -> list[list[int]]:
    ids = eng.encode("The treaty requires the parties to")
    return [ids, ids + ids[:3], ids[:3]]


def _request(eng: HFEngine, rows: list[int], steps: int, spec: ProbeSpec | None) -> BatchRequest:
    prompts = _prompts(eng)
    return BatchRequest(
        rows=[prompts[r] for r in rows],
        decode_steps=steps,
        probe_rows=list(range(len(rows))),
        probes=spec,
    )


def test_every_layer_shares_one_graph_per_shape_class() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eng = HFEngine("tiny", dtype="bfloat16", compiled=True)
    assert eng.num_layers > 2
    for rows, steps in SHAPES.values():
        eng.run_batch(_request(eng, rows, steps, None))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    # Prefill and decode for batch 1, batch > 1, padded batch: 6 at most, whatever the number
    # of layers (the whole-stack compile built 3 per class: prefill, first decode, later decode).
    assert 0 < graphs <= 6, graphs


def test_warm_up_compiles_every_shape_class_before_any_timed_batch() -> None:
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eng = HFEngine("tiny", dtype="bfloat16", compiled=True)
    assert eng.warm_up() > 0
    built = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for rows, steps in SHAPES.values():
        eng.run_batch(_request(eng, rows, steps, ProbeSpec(layers=(0, 1))))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == built  # no compile left


def test_compile_moves_every_probe_and_an_eager_engine_on_the_same_model_stays_eager() -> None:
    loaded = load_model("tiny", "bfloat16", "sdpa", "cpu", None)
    eager = HFEngine(loaded)
    compiled = HFEngine(loaded, compiled=True)
    again = HFEngine(loaded)
    spec = ProbeSpec(layers=tuple(range(eager.num_layers)))

    def probes(eng: HFEngine) -> dict[str, bytes]:
        res = eng.run_batch(_request(eng, [0, 0], 6, spec))
        return {k: b.data for k, b in res.rows[0].probes.items()}

    a, c, b = probes(eager), probes(compiled), probes(again)
    assert a == b  # the compiled engine's routing never reaches an eager engine's forward passes
    assert compiled.setup.compiled and not eager.setup.compiled
    moved = [k for k in a if a[k] != c[k]]
    assert len(moved) == len(a), sorted(set(a) - set(moved))


@pytest.mark.slow
def test_a_compiled_record_does_not_depend_on_the_order_shapes_were_first_met() -> None:
    order = list(SHAPES.items())

    def digests(shapes: list[tuple[str, tuple[list[int], int]]]) -> dict[str, str]:
        done = subprocess.run(
            [sys.executable, "-c", _RUN, json.dumps(shapes)],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
        return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]

    forward, backward = digests(order), digests(order[::-1])
    assert forward == backward
    assert len(set(forward.values())) == len(SHAPES)
