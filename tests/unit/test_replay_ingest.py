"""The compiled commit/head decoder agrees with fpmon.wire.decode on valid and hostile input."""

from __future__ import annotations

import random

import msgpack
import pytest

from fpmon.setups import Setup
from fpmon.wire import Commit, Head, Limits, Telemetry, WireError, decode, encode
from replay import ingest

LIMITS = Limits()


def commit_map() -> dict:
    return Commit(
        node="n1",
        t=1.0,
        seq=3,
        request_id="r",
        record_digest=b"d" * 32,
        chain=b"c" * 32,
        setup=Setup().to_map(),
        model="tiny",
        prompt_tokens=2,
        output_tokens=5,
    ).to_map()


def outcome(fn, frames):
    try:
        return ("ok", fn(frames, LIMITS, ("commit", "head", "telemetry")))
    except WireError as e:
        return ("err", e.reason, str(e))


def mutations() -> list[list[bytes]]:
    rnd = random.Random(5)
    base = commit_map()
    vals = [None, True, 1, -1, 1.5, "x", b"y", [1], {"a": 1}, {"a": {"b": [1]}}, 2**63]
    out = []
    for k in [*list(base), "extra"]:
        for v in vals:
            m = dict(base)
            m[k] = v
            out.append([b"commit", msgpack.packb(m, use_bin_type=True)])
        m = dict(base)
        m.pop(k, None)
        out.append([b"commit", msgpack.packb(m, use_bin_type=True)])
    out.append([b"commit", b"\xc1garbage"])
    out.append([b"commit", msgpack.packb([1, 2])])
    out.append([b"commit"])
    out.append([b"head", msgpack.packb({"v": 1, "node": "n", "t": 1})])
    raw = encode(Commit(**base))[1]
    for _ in range(200):
        b = bytearray(raw)
        b[rnd.randrange(len(b))] = rnd.randrange(256)
        out.append([b"commit", bytes(b)])
    return out


@pytest.mark.parametrize("frames", mutations())
def test_fast_and_generic_decoders_agree(frames: list[bytes]) -> None:
    assert outcome(ingest.decode, frames) == outcome(decode, frames)


def test_valid_messages_of_every_ingest_topic() -> None:
    msgs = [
        Commit(**commit_map()),
        Head(node="n", t=2, seq=1, chain=b"c", sig=b"s", pubkey=b"p"),
        Telemetry(node="n", t=3.0, gpus=[], host={"cpu": 1.0}, source="host"),
    ]
    for m in msgs:
        assert ingest.decode(encode(m), LIMITS, ("commit", "head", "telemetry")) == m


def test_topic_not_expected_is_refused() -> None:
    with pytest.raises(WireError) as e:
        ingest.decode(encode(Commit(**commit_map())), LIMITS, ("head",))
    assert e.value.reason == "unknown_topic"
