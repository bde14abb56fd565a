"""Wire codec: schema validation and hard limits on untrusted frames."""

from __future__ import annotations

import msgpack
import pytest

from fpmon.chain import GENESIS, next_chain, sign_head, verify_head
from fpmon.wire import Commit, Head, Limits, WireError, decode, encode


def _commit(**kw: object) -> Commit:
    base = dict(
        node="n1",
        t=1.0,
        seq=0,
        request_id="r",
        record_digest=b"d" * 32,
        chain=b"c" * 32,
        setup={"dtype": "bfloat16"},
        model="tiny",
        prompt_tokens=3,
        output_tokens=4,
    )
    base.update(kw)
    return Commit(**base)  # type: ignore[arg-type]


def test_round_trip() -> None:
    c = _commit()
    assert decode(encode(c)) == c


@pytest.mark.parametrize(
    "frames, reason",
    [
        ([b"commit"], "frame_count"),
        ([b"nope", msgpack.packb({})], "unknown_topic"),
        ([b"commit", b"\xc1"], "malformed"),
        ([b"commit", msgpack.packb([1, 2])], "schema"),  # not a map
        ([b"commit", msgpack.packb({1: 2})], "schema"),  # non-string key
        ([b"commit", msgpack.packb({"v": 1})], "schema"),
        ([b"commit", encode(_commit())[1] + b"\x00"], "malformed"),  # trailing bytes
        ([b"\xff\xfe", b""], "unknown_topic"),
    ],
)
def test_rejections_have_reasons(frames: list[bytes], reason: str) -> None:
    with pytest.raises(WireError) as e:
        decode(frames)
    assert e.value.reason == reason


def test_ext_types_rejected() -> None:
    m = _commit().to_map()
    m["setup"] = msgpack.ExtType(5, b"evil")
    with pytest.raises(WireError) as e:
        decode([b"commit", msgpack.packb(m)])
    assert e.value.reason == "schema"


def test_wrong_field_type_rejected() -> None:
    m = _commit().to_map()
    m["seq"] = "7"
    with pytest.raises(WireError, match="seq"):
        decode([b"commit", msgpack.packb(m, use_bin_type=True)])


def test_oversized_and_too_deep() -> None:
    big = encode(_commit(setup={"x": "y" * 5000}))
    with pytest.raises(WireError) as e:
        decode(big, Limits(max_bytes=1000))
    assert e.value.reason == "oversized"
    deep: dict = {}
    cur = deep
    for _ in range(20):
        cur["a"] = {}
        cur = cur["a"]
    m = _commit().to_map()
    m["setup"] = deep
    with pytest.raises(WireError) as e:
        decode([b"commit", msgpack.packb(m, use_bin_type=True)])
    assert e.value.reason == "schema"


def test_topic_restriction() -> None:
    with pytest.raises(WireError) as e:
        decode(encode(_commit()), expect=("head",))
    assert e.value.reason == "unknown_topic"


def test_head_signature() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    chain = next_chain(GENESIS, b"d" * 32)
    sig = sign_head(key, "n1", 0, chain)
    head = Head(node="n1", t=1.0, seq=0, chain=chain, sig=sig, pubkey=pub)
    assert decode(encode(head)) == head
    assert verify_head(pub, "n1", 0, chain, sig)
    assert not verify_head(pub, "n2", 0, chain, sig)
    assert not verify_head(pub, "n1", 1, chain, sig)
    assert not verify_head(pub, "n1", 0, next_chain(chain, b"x"), sig)


def test_protocol_doc_is_current() -> None:
    from pathlib import Path

    from fpmon.wire.doc import render

    doc = Path(__file__).parents[2] / "docs" / "PROTOCOL.md"
    assert doc.read_text() == render(), "regenerate: python -m fpmon.wire.doc > docs/PROTOCOL.md"
