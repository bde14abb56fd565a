"""Canonical encoding: exact bytes, stable digests, strict decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fpmon import canonical
from fpmon.errors import FingerprintFileError
from fpmon.records import FP_VERSION, Record, load_fingerprint, save_fingerprint
from fpmon.setups import Setup
from fpmon.tensors import Blob


def _record(**changes: object) -> Record:
    t = torch.tensor([[1.0, -2.5e-3, 3.0e4], [0.0, -0.0, 1e-30]])
    base = dict(
        node="n1",
        seq=3,
        request_id="r",
        t_start=1.5,
        t_end=2.0,
        model="tiny",
        weights_digest="ab" * 32,
        setup=Setup(),
        prompt_ids=[1, 2],
        output_ids=[3],
        schedule={"kind": "static", "row_lengths": [2], "decode_steps": 0},
        probes={
            "keys.L0": Blob.from_torch(t.to(torch.bfloat16)),
            "hidden.final": Blob.from_torch(t.to(torch.float16)),
            "logits.topk.values": Blob.from_torch(t),
        },
        layers=[0],
    )
    base.update(changes)
    return Record(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_blob_keeps_exact_bits(dtype: torch.dtype) -> None:
    t = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)).to(dtype)
    b = Blob.from_torch(t)
    raw = t.view(torch.int16 if t.element_size() == 2 else torch.int32).numpy().tobytes()
    assert b.data == raw
    assert np.array_equal(b.as_float64(), t.double().numpy())


def test_ulp_order_counts_steps_across_zero() -> None:
    x = torch.tensor([1.0], dtype=torch.float32)
    nxt = torch.nextafter(x, torch.tensor([2.0]))
    assert int(Blob.from_torch(nxt).ordered_ints()[0] - Blob.from_torch(x).ordered_ints()[0]) == 1
    neg = Blob.from_torch(torch.tensor([-0.0])).ordered_ints()
    pos = Blob.from_torch(torch.tensor([0.0])).ordered_ints()
    assert int(pos[0] - neg[0]) == 0


def test_record_round_trips_exactly() -> None:
    r = _record()
    back = Record.decode(r.encode())
    assert back == r
    assert back.encode() == r.encode()
    assert back.digest() == r.digest()


def test_digest_changes_with_any_bit() -> None:
    r = _record()
    blob = r.probes["keys.L0"]
    flipped = bytearray(blob.data)
    flipped[0] ^= 1
    other = _record(probes={**r.probes, "keys.L0": Blob(blob.dtype, blob.shape, bytes(flipped))})
    assert other.digest() != r.digest()


def test_canonical_is_key_order_independent() -> None:
    assert canonical.pack({"b": 1, "a": [1.0, b"x"]}) == canonical.pack({"a": [1.0, b"x"], "b": 1})


def test_record_of_future_version_is_refused() -> None:
    m = _record().to_map()
    m["v"] = 99
    with pytest.raises(ValueError, match="v99"):
        Record.from_map(m)


def test_blob_rejects_wrong_length() -> None:
    with pytest.raises(ValueError, match="needs"):
        Blob("float32", (2, 2), b"\0" * 15)


def test_fingerprint_file_round_trip(tmp_path) -> None:
    p = tmp_path / "a.fp"
    save_fingerprint(p, [_record()], {"prompts": ["x"]})
    recs, meta = load_fingerprint(p)
    assert recs == [_record()] and meta == {"prompts": ["x"]}


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a fingerprint"),
        (b"\x93\x01", "truncated or foreign"),
        (canonical.pack({"kind": "other"}), "not an fpmon fingerprint"),
        (canonical.pack({"kind": "fpmon.fingerprint", "v": FP_VERSION + 1}), "not supported"),
    ],
)
def test_bad_fingerprint_files(tmp_path, content: bytes, message: str) -> None:
    p = tmp_path / "bad.fp"
    p.write_bytes(content)
    with pytest.raises(FingerprintFileError, match=message):
        load_fingerprint(p)


def test_truncated_real_file(tmp_path) -> None:
    p = tmp_path / "a.fp"
    save_fingerprint(p, [_record()])
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(FingerprintFileError):
        load_fingerprint(p)


def test_setup_validates() -> None:
    with pytest.raises(ValueError, match="slot 4"):
        Setup(batch_size=4, slot=4)
    with pytest.raises(ValueError, match="dtype"):
        Setup(dtype="int3")
    assert Setup().numeric_diff(Setup(attn_impl="eager", slot=0)) == ["attn_impl"]
