"""The verifier's signatures: what they cover, what breaks them, and the key file's policy."""

from __future__ import annotations

import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon import signing
from fpmon.errors import FpmonError
from fpmon.wire import Alert, Verdict, decode, encode


def test_a_signature_survives_the_wire_and_breaks_on_any_change():
    key = Ed25519PrivateKey.generate()
    pub = signing.public_key(signing.public_bytes(key))
    # An int in a float field comes out of decoding a float: signed as decoded, it still holds.
    v = signing.sign(key, Verdict(node="n", t=1, seq=3, status="match", replay_s=2))
    got = decode(encode(v))
    assert signing.check(pub, got) is None
    for change in ({"status": "mismatch"}, {"seq": 4}, {"evidence": {"x": 1}}, {"t": 1.5}):
        assert signing.check(pub, type(v)(**{**v.to_map(), **change})) == "bad_signature"
    assert signing.check(pub, type(v)(**{**v.to_map(), "sig": b""})) == "unsigned"
    other = signing.sign(Ed25519PrivateKey.generate(), v)
    assert signing.check(pub, other) == "bad_signature"
    # The same fields under another topic are not the same statement.
    m = {k: x for k, x in v.to_map().items()}
    assert signing.check_map(pub, "alert", m) == "bad_signature"
    a = signing.sign(key, Alert(node="n", t=1.0, id="x", kind="shed", severity="warning",
                                message="m"))  # fmt: skip
    assert signing.check(pub, decode(encode(a))) is None


def test_a_verdict_from_a_verifier_without_attribution_status_still_checks():
    """The attribution status lives in the evidence, omitted when empty: what a verifier that
    predates it signed is what a monitor that knows it re-encodes, so the signature holds."""
    import msgpack

    from fpmon.wire import Evidence

    key = Ed25519PrivateKey.generate()
    pub = signing.public_key(signing.public_bytes(key))
    # Every field a verdict had before the attribution status existed, as such a verifier sent it.
    old_map = {"v": 1, "node": "n", "t": 1.0, "seq": 3, "status": "mismatch", "request_id": "",
               "evidence": {"mode": "exact"}, "attribution": [], "declared": {}, "replay_s": 0.0,
               "reference": "cpu", "cross_gpu": False, "reason": ""}  # fmt: skip
    sig = key.sign(signing.signed_bytes("verdict", old_map))
    frames = [b"verdict", msgpack.packb({**old_map, "sig": sig}, use_bin_type=True)]
    got = decode(frames)
    assert got.evidence.attribution_status == "" and signing.check(pub, got) is None
    # A status the verifier states is covered like any other field.
    stated = signing.sign(key, Verdict(node="n", t=1, seq=4, status="mismatch",
                                       evidence=Evidence(attribution_status="budget")))  # fmt: skip
    assert signing.check(pub, decode(encode(stated))) is None
    forged = type(stated)(**{**stated.to_map(), "evidence": {"attribution_status": "exact"}})
    assert signing.check(pub, forged) == "bad_signature"


def test_key_file_is_made_once_private_and_refused_when_world_readable(tmp_path):
    path = tmp_path / "k" / "verifier.key"
    key = signing.load_or_create_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert (tmp_path / "k" / "verifier.key.pub").read_text().strip() == (
        signing.public_bytes(key).hex()
    )
    again = signing.load_or_create_key(path)
    assert signing.public_bytes(again) == signing.public_bytes(key)
    path.chmod(0o644)
    with pytest.raises(FpmonError, match="world-readable"):
        signing.load_or_create_key(path)
    path.chmod(0o600)
    path.write_text("not a key")
    with pytest.raises(FpmonError, match="not a PEM"):
        signing.load_or_create_key(path)
