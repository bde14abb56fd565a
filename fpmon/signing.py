"""The verifier's Ed25519 signatures on what it says: verdicts, alerts and state replies.

A verdict that flags a node is only worth something if the verifier said it: anyone who can
publish to a monitor could otherwise flag an honest node. The replay daemon signs every
`Verdict`, `Alert` and `StateReply` it sends; monitors hold its public key and drop what is
unsigned or signed otherwise.

What is signed: `SIG_DOMAIN ‖ topic ‖ 0x00 ‖ canonical msgpack of the message's map without
`sig``, the map as a receiver decodes it (the domain and the topic keep a signature from being
valid for anything else, a head or another message type). The key file is the same format and
policy as a node's head key: PEM PKCS#8 Ed25519, written 0600, refused when others can read it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, TypeVar, cast

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from fpmon import canonical
from fpmon.config import check_private
from fpmon.errors import FpmonError
from fpmon.wire import Limits, Message, decode, encode

SIG_DOMAIN = b"fpmon-verifier-sig-v1\x00"
SIGNED_TOPICS = ("verdict", "alert", "state")
M = TypeVar("M", bound=Message)


def signed_bytes(topic: str, m: dict[str, Any]) -> bytes:
    body = {k: v for k, v in m.items() if k != "sig"}
    return SIG_DOMAIN + topic.encode() + b"\x00" + canonical.pack(body)


def sign(key: Ed25519PrivateKey, msg: M) -> M:
    """`msg` with `sig` set. Signed as receivers will decode it (an int in a float field comes
    out a float), so a wire round trip first."""
    frames = encode(msg)
    decoded = decode(frames, Limits(max_bytes=max(len(frames[1]), Limits().max_bytes)))
    sig = key.sign(signed_bytes(msg.TOPIC, decoded.to_map()))
    return cast(M, msgspec.structs.replace(decoded, sig=sig))


def check_map(public: Ed25519PublicKey, topic: str, m: dict[str, Any]) -> str | None:
    """None when `m` carries a good signature by `public`; else the reason to count."""
    sig = m.get("sig")
    if not isinstance(sig, bytes) or not sig:
        return "unsigned"
    try:
        public.verify(sig, signed_bytes(topic, m))
    except InvalidSignature:
        return "bad_signature"
    return None


def check(public: Ed25519PublicKey, msg: Message) -> str | None:
    return check_map(public, msg.TOPIC, msg.to_map())


def public_key(raw: bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(raw)


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def load_or_create_key(path: Path) -> Ed25519PrivateKey:
    """The verifier's signing key from `path`, made there (0600) the first time, with its
    public half as hex in `<path>.pub` for monitors' configs. It is the verifier's identity
    across restarts: monitors pin it."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        _write_private(path, pem)
        path.with_name(path.name + ".pub").write_text(public_bytes(key).hex() + "\n")
    check_private(path, "verifier signing key")
    try:
        loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except ValueError as e:
        raise FpmonError(f"{path}: not a PEM Ed25519 key ({e})") from None
    if not isinstance(loaded, Ed25519PrivateKey):
        raise FpmonError(f"{path}: not an Ed25519 key")
    return loaded
