"""Row manifests in records: construction, digests, the root commits name, bounds at decode."""

from __future__ import annotations

import dataclasses
import hashlib

import msgpack
import msgspec
import pytest

from fpmon import canonical, manifest
from fpmon.records import Record
from fpmon.setups import Setup
from fpmon.wire.messages import MAX_ROWS, ClientRequest, ManifestRow


@pytest.fixture
def plain() -> Record:
    """A record without a client (as `fpmon capture` makes): no manifest, no request."""
    return Record(
        node="n1",
        seq=3,
        request_id="r3",
        t_start=1.5,
        t_end=2.0,
        model="tiny",
        weights_digest="ab" * 32,
        setup=Setup(batch_size=2, slot=1),
        prompt_ids=[11, 12],
        output_ids=[13],
        schedule={"kind": "static", "row_lengths": [2, 2], "decode_steps": 0},
        probes={},
        layers=[0],
    )


def served(rec: Record) -> Record:
    """`rec` as an agent serves it: beside another client's request, both in the manifest."""
    mine = manifest.token_request("r3", rec.prompt_ids, 1)
    other = manifest.token_request("r2", [5, 6], 1, client="K" * 40)
    rows = manifest.batch([("r2", other), ("r3", mine)], 2)
    return dataclasses.replace(rec, manifest=rows, request=mine)


def test_a_record_without_a_client_keeps_its_bytes(plain: Record) -> None:
    m = plain.to_map()
    assert "manifest" not in m and "request" not in m
    # Same map as before manifests existed: digests of captured and lab records are unchanged.
    assert plain.encode() == canonical.pack(m)
    assert Record.decode(plain.encode()) == plain
    assert manifest.root(plain.manifest) == b""


def test_a_served_record_round_trips_with_its_manifest(plain: Record) -> None:
    rec = served(plain)
    back = Record.decode(rec.encode())
    assert back == rec and back.digest() == rec.digest()
    assert [r.request_id for r in back.manifest or ()] == ["r2", "r3"]
    assert back.request is not None and back.request.submit == rec.request.submit  # type: ignore[union-attr]


def test_the_row_digest_binds_the_client_key_and_its_exact_bytes() -> None:
    req = manifest.token_request("r", [1, 2, 3], 4)
    d = manifest.request_digest(req)
    assert len(d) == 32
    assert d == hashlib.sha256(b"fpmon-request-v1\0" + b"\0\0" + req.submit).digest()
    assert manifest.request_digest(msgspec.structs.replace(req, client="A" * 40)) != d
    flipped = req.submit[:-1] + bytes([req.submit[-1] ^ 1])
    assert manifest.request_digest(ClientRequest(submit=flipped)) != d
    # The bytes are the client's submit message, which decodes with the wire's checks.
    assert manifest.submit_of(req).prompt_ids == [1, 2, 3]


def test_the_root_changes_with_any_row_and_with_the_order() -> None:
    a, b = (
        ManifestRow(request_id="a", digest=b"1" * 32),
        ManifestRow(request_id="b", digest=b"2" * 32),
    )
    roots = {
        manifest.root((a, b)),
        manifest.root((b, a)),
        manifest.root((a,)),
        manifest.root((a, b, manifest.FILLER)),
        manifest.root((a, msgspec.structs.replace(b, digest=b"3" * 32))),
    }
    assert len(roots) == 5 and all(len(r) == 32 for r in roots)
    assert manifest.root(()) != b""  # an empty manifest is not "no manifest"


def test_batch_puts_requests_in_their_slots_and_fills_the_rest() -> None:
    req = manifest.token_request("x", [1], 1)
    rows = manifest.batch([("x", req)], 4, [2])
    assert [r.request_id for r in rows] == ["", "", "x", ""]
    assert rows[0] == manifest.FILLER and rows[2].digest == manifest.request_digest(req)


def _with(rec: Record, **fields: object) -> bytes:
    m = rec.to_map()
    m.update(fields)
    return msgpack.packb(m, use_bin_type=True)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ([{"request_id": "r", "digest": b"d"}] * (MAX_ROWS + 1), "4096"),  # oversized
        ([{"request_id": "r" * 257, "digest": b"d"}], "256"),  # an id over the bound
        ([{"request_id": "r", "digest": b"d" * 65}], "64"),  # a digest over the bound
        ([{"request_id": "r", "digest": "not bytes"}], "bytes"),
        ([{"request_id": "r", "digest": b"d", "extra": 1}], "extra"),
        ([["r", b"d"]], "object"),
        ({"request_id": "r"}, "array"),
        ("rows", "array"),
        ([None], "object"),
    ],
)
def test_hostile_manifests_are_refused_at_decode(plain: Record, value: object, why: str) -> None:
    with pytest.raises(ValueError, match="malformed record: manifest") as e:
        Record.decode(_with(plain, manifest=value))
    assert why in str(e.value)


@pytest.mark.parametrize(
    "value",
    [{"client": "k", "submit": b"x" * ((16 << 20) + 1)}, {"client": 3}, {"submit": "text"}, []],
)
def test_hostile_requests_are_refused_at_decode(plain: Record, value: object) -> None:
    with pytest.raises(ValueError, match="malformed record: request"):
        Record.decode(_with(plain, request=value))


def test_a_request_that_is_no_submit_message_is_named_not_raised() -> None:
    for junk in (b"", b"\xc1", msgpack.packb({"request_id": "r"}), msgpack.packb([1, 2])):
        with pytest.raises(ValueError, match="not a submit message"):
            manifest.submit_of(ClientRequest(submit=junk))
