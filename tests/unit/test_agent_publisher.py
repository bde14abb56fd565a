"""The publisher on a real PUB socket: fast commit frames decode as the schema says; heads."""

from __future__ import annotations

import time

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agents.heads import HeadSigner
from agents.publisher import Publisher, commit_frames
from fpmon.chain import GENESIS, next_chain, verify_head
from fpmon.setups import Setup
from fpmon.wire import Commit, Head, decode, encode


def _commit(seq: int, chain: bytes) -> Commit:
    return Commit(
        node="n",
        t=time.time(),
        seq=seq,
        request_id=f"r{seq}",
        record_digest=b"d" * 32,
        chain=chain,
        setup=Setup().to_map(),
        model="tiny",
        prompt_tokens=3,
        output_tokens=4,
        prefill_s=0.5,
        decode_s=1.0,
    )


def test_fast_frames_decode_to_the_same_commit():
    c = _commit(7, b"c" * 32)
    assert decode(commit_frames(c), expect=("commit",)) == c
    assert decode(encode(c)) == decode(commit_frames(c))


def test_publisher_sends_commits_and_a_head_every_n():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    key = Ed25519PrivateKey.generate()
    p = Publisher(
        pub,
        HeadSigner(key, "n"),
        head_seq=-1,
        head_chain=GENESIS,
        head_every_s=3600,
        head_every_n=3,
    )
    time.sleep(0.3)  # slow joiner
    chain = GENESIS
    for seq in range(3):
        chain = next_chain(chain, b"d" * 32)
        p.commit(_commit(seq, chain))
    got = []
    while sub.poll(2000) and len(got) < 4:
        got.append(decode(sub.recv_multipart()))
    assert [m.TOPIC for m in got] == ["commit", "commit", "commit", "head"]
    head = got[-1]
    assert isinstance(head, Head) and head.seq == 2 and head.chain == chain
    assert verify_head(head.pubkey, "n", head.seq, head.chain, head.sig)
    pub.close(0)
    sub.close(0)
    ctx.term()
