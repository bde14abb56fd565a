"""Attribution hints from real records: the field tried first is the one the physics shows."""

from __future__ import annotations

import pytest

from fpmon.compare import compare_records
from fpmon.records import Record
from fpmon.replay.hints import field_order, hidden_dtype
from fpmon.reproduce import replay_record
from fpmon.testing.fleet import ProverNode

FIELDS = ("batch_size", "attn_impl", "dtype", "compiled")


@pytest.fixture(scope="module")
def node():
    n = ProverNode("hints")
    yield n
    n.close()


def first_field(node, engine, declared_engine, **make) -> tuple[str, str]:
    ids = engine.encode("which field moved?")
    c = node.make(engine, ids, **make)
    rec = Record.decode(node.records[c.seq])
    comp = compare_records(rec, replay_record(declared_engine, rec))
    assert not comp.identical
    return field_order(rec, comp, FIELDS)[0], hidden_dtype(rec)


def test_batch_attention_and_dtype_hints(node, tiny_engine) -> None:
    f32 = tiny_engine("float32", "sdpa")
    assert first_field(node, f32, f32, batch_size=4, declare={"batch_size": 1}) == (
        "batch_size",
        "",
    )
    bf_eager, bf = tiny_engine("bfloat16", "eager"), tiny_engine("bfloat16", "sdpa")
    assert first_field(node, bf_eager, bf, declare={"attn_impl": "sdpa"})[0] == "attn_impl"
    assert first_field(node, bf, f32, declare={"dtype": "float32"}) == ("dtype", "bfloat16")


def test_honest_float32_probes_betray_no_dtype(node, tiny_engine) -> None:
    f32 = tiny_engine("float32", "sdpa")
    c = node.make(f32, f32.encode("honest float32"))
    assert hidden_dtype(Record.decode(node.records[c.seq])) == ""
    assert field_order(Record.decode(node.records[c.seq]), None, FIELDS) == list(FIELDS)
