"""Signed chain heads: what lets a verifier hold the node to its whole history at once."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon.agents.keys import public_bytes
from fpmon.chain import sign_head
from fpmon.wire import Head


class HeadSigner:
    def __init__(self, key: Ed25519PrivateKey, node: str) -> None:
        self._key = key  # never serialised: only the public key travels
        self.node = node
        self.pubkey = public_bytes(key)

    def head(self, seq: int, chain: bytes) -> Head:
        sig = sign_head(self._key, self.node, seq, chain)
        return Head(
            node=self.node, t=time.time(), seq=seq, chain=chain, sig=sig, pubkey=self.pubkey
        )
