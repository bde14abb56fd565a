"""Hostile frames stop at the typed boundary: every one the red team used is a counted reason.

Each frame below crashed or blinded a component before the wire contract bounded it (issue
11); they now fail `decode` with a `WireError`, so nothing behind a socket sees them.
"""

from __future__ import annotations

import random

import msgpack
import pytest

from fpmon.setups import Setup
from fpmon.wire import (
    MESSAGE_TYPES,
    Commit,
    Head,
    Limits,
    OpenRequest,
    StateRequest,
    Telemetry,
    WireError,
    decode,
    encode,
)

LIMITS = Limits()
I64 = 2**63


def commit_map(**kw: object) -> dict:
    m = Commit(
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
    m.update(kw)
    return m


def head_map(**kw: object) -> dict:
    m = Head(node="n1", t=1.0, seq=1, chain=b"c" * 32, sig=b"s" * 64, pubkey=b"p" * 32).to_map()
    m.update(kw)
    return m


def frame(topic: str, m: object) -> list[bytes]:
    return [topic.encode(), msgpack.packb(m, use_bin_type=True)]


CRAFTED = {
    # struct.error in fpmon/chain.py via replay/chains.py on_head, no signing key needed
    "head seq -1": frame("head", head_map(seq=-1)),
    "head seq 2^64": frame("head", head_map(seq=2**64 - 1)),
    # OverflowError in replay/store.py add_verdict
    "commit seq 2^63": frame("commit", commit_map(seq=I64)),
    # TypeError in store._json
    "bytes key in setup": frame("commit", commit_map(setup={b"dtype": "x"})),
    "int key in setup": frame("commit", commit_map(setup={1: "x"})),
    # canonical.pack on the next StateRequest
    "bytes key in telemetry": frame(
        "telemetry", {"v": 1, "node": "n1", "t": 1.0, "host": {b"cpu": 1}}
    ),
    "unknown gpu field": frame(
        "telemetry", {"v": 1, "node": "n1", "t": 1.0, "gpus": [{"index": 0, "evil": 1}]}
    ),
    "since_verdicts 2^63": frame("state?", {"v": 1, "node": "m", "t": 1.0, "since_verdicts": I64}),
    "negative since_verdicts": frame(
        "state?", {"v": 1, "node": "m", "t": 1.0, "since_verdicts": -5}
    ),
    # agents/store.py RecordLog.get
    "open seq 2^63": frame("open", {"v": 1, "node": "v", "t": 1.0, "seq": I64, "nonce": b"n"}),
    "open seq -1": frame("open", {"v": 1, "node": "v", "t": 1.0, "seq": -1, "nonce": b"n"}),
    "NaN time": frame("commit", commit_map(t=float("nan"))),
    "negative time": frame("commit", commit_map(t=-1.0)),
    "empty node": frame("commit", commit_map(node="")),
    "huge node name": frame("commit", commit_map(node="n" * 70_000)),
    "negative tokens": frame("commit", commit_map(output_tokens=-1)),
    "infinite decode time": frame("commit", commit_map(decode_s=float("inf"))),
    "bool as seq": frame("commit", commit_map(seq=True)),
    "unknown verdict status": frame(
        "verdict", {"v": 1, "node": "n1", "t": 1.0, "seq": 1, "status": "fine"}
    ),
    "unknown alert kind": frame(
        "alert",
        {
            "v": 1,
            "node": "n1",
            "t": 1.0,
            "id": "a",
            "kind": "x",
            "severity": "critical",
            "message": "m",
        },
    ),
    "schema v2": frame("commit", commit_map(v=2)),
    "deep setup": frame("commit", commit_map(setup={"a": {"b": {"c": {"d": 1}}}})),
    "long digest": frame("commit", commit_map(record_digest=b"d" * 65)),
}


@pytest.mark.parametrize("name", list(CRAFTED))
def test_crafted_frames_are_refused_with_a_reason(name: str) -> None:
    with pytest.raises(WireError) as e:
        decode(CRAFTED[name], LIMITS)
    assert e.value.reason in ("schema", "malformed")


def test_bounds_admit_their_extremes() -> None:
    c = decode(frame("commit", commit_map(seq=I64 - 1)), LIMITS)
    assert isinstance(c, Commit) and c.seq == I64 - 1
    r = decode(frame("open", {"v": 1, "node": "v", "t": 1.0, "seq": 0, "nonce": b""}), LIMITS)
    assert isinstance(r, OpenRequest)
    s = decode(frame("state?", {"v": 1, "node": "m", "t": 1.0}), LIMITS)
    assert isinstance(s, StateRequest) and s.since_verdicts == 0


def mutations(seed: int, n: int) -> list[list[bytes]]:
    """Random byte flips, truncations and splices of valid frames of every topic."""
    rnd = random.Random(seed)
    valid = [
        encode(Commit(**commit_map())),
        encode(Head(**head_map())),
        encode(Telemetry(node="n", t=3.0, source="host")),
    ]
    out = []
    for _ in range(n):
        topic, raw = rnd.choice(valid)
        b = bytearray(raw)
        for _ in range(rnd.randint(1, 4)):
            op = rnd.random()
            if op < 0.6 and b:
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            elif op < 0.8:
                del b[rnd.randrange(len(b) + 1) :]
            else:
                i = rnd.randrange(len(b) + 1)
                b[i:i] = rnd.randbytes(rnd.randint(1, 16))
        out.append([rnd.choice([topic, *[t.encode() for t in MESSAGE_TYPES]]), bytes(b)])
    return out


def test_mutated_frames_decode_or_fail_with_a_reason() -> None:
    """Anything but a typed message or a WireError would escape into a socket loop."""
    for frames in mutations(5, 20_000):
        try:
            msg = decode(frames, LIMITS)
        except WireError as e:
            assert e.reason in ("schema", "malformed", "oversized")
            continue
        # What decodes is whole and in bounds: it encodes back without error.
        assert decode(encode(msg), LIMITS) == msg


def test_valid_messages_of_every_ingest_topic() -> None:
    msgs = [
        Commit(**commit_map()),
        Head(**head_map()),
        Telemetry(node="n", t=3.0, source="host"),
    ]
    for m in msgs:
        assert decode(encode(m), LIMITS, ("commit", "head", "telemetry")) == m


def tele(gpu: dict | None = None, **kw: object) -> list[bytes]:
    m: dict = {"v": 1, "node": "n1", "t": 1.0, "gpus": [{"index": 0, **(gpu or {})}]}
    m.update(kw)
    return frame("telemetry", m)


BAD_TELEMETRY = {
    "negative util": tele({"util": -1.0}),
    "NaN util": tele({"util": float("nan")}),
    "util over 100%": tele({"util": 100.5}),
    "infinite power": tele({"power_w": float("inf")}),
    "negative memory": tele({"mem_used": -5}),
    "more memory used than the GPU has": tele({"mem_used": 2e11, "mem_total": 1.4e11}),
    "GPM tensor over 100%": tele({"gpm": {"interval_s": 1.0, "tensor_util": 250.0}}),
    "GPM NaN SM": tele({"gpm": {"interval_s": 1.0, "sm_util": float("nan")}}),
    "GPM zero interval": tele({"gpm": {"interval_s": 0.0, "sm_util": 1.0}}),
    "negative process memory": tele({"processes": [{"pid": 7, "used_memory": -1}]}),
    "negative pid": tele({"processes": [{"pid": -7}]}),
    "host cpu over 100%": frame(
        "telemetry", {"v": 1, "node": "n1", "t": 1.0, "host": {"cpu_util": 140.0}}
    ),
    "negative engine cpu time": tele(engine={"pid": 1, "cpu_s": -3.0}),
    "NaN engine cpu": tele(engine={"pid": 1, "cpu_util": float("nan")}),
}


@pytest.mark.parametrize("name", list(BAD_TELEMETRY))
def test_impossible_telemetry_figures_are_refused(name: str) -> None:
    with pytest.raises(WireError) as e:
        decode(BAD_TELEMETRY[name], LIMITS)
    assert e.value.reason == "schema"


def test_full_telemetry_round_trips_and_admits_its_extremes() -> None:
    m = decode(
        tele(
            {
                "util": 100,
                "mem_util": 0,
                "mem_used": 1.4e11,
                "mem_total": 1.4e11,
                "gpm_status": "ok",
                "gpm": {"interval_s": 1.0, "sm_util": 100.0, "tensor_hmma_util": 0.0},
                "processes": [{"pid": 4_194_304, "used_memory": None, "engine": None}],
            },
            engine={"pid": 1, "cpu_s": 12.5, "cpu_util": 800.0, "children": 2},
            scope="engine device cuda:0",
        ),
        LIMITS,
    )
    assert isinstance(m, Telemetry) and m.gpus[0].gpm is not None
    assert m.gpus[0].gpm.tensor_util is None  # not measured stays absent, never 0
    assert decode(encode(m), LIMITS) == m
