"""Hash chain of record digests and Ed25519-signed chain heads."""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

GENESIS = b"\x00" * 32
HEAD_DOMAIN = b"fpmon-head-v1\x00"


def next_chain(prev: bytes, record_digest: bytes) -> bytes:
    return hashlib.sha256(prev + record_digest).digest()


def head_message(node: str, seq: int, chain: bytes) -> bytes:
    """What a head signature covers: domain, node, seq, chain (no ambiguity between fields)."""
    n = node.encode()
    return HEAD_DOMAIN + struct.pack(">H", len(n)) + n + struct.pack(">Q", seq) + chain


def sign_head(key: Ed25519PrivateKey, node: str, seq: int, chain: bytes) -> bytes:
    return key.sign(head_message(node, seq, chain))


def verify_head(pubkey: bytes, node: str, seq: int, chain: bytes, sig: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(pubkey).verify(sig, head_message(node, seq, chain))
    except (InvalidSignature, ValueError):
        return False
    return True
