"""The publisher on a real PUB socket: fast commit frames decode as the schema says; heads."""

from __future__ import annotations

import threading
import time

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon.agents.heads import HeadSigner
from fpmon.agents.publisher import Publisher, commit_frames
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


def _chained(n: int) -> list[Commit]:
    out, chain = [], GENESIS
    for seq in range(n):
        chain = next_chain(chain, b"d" * 32)
        out.append(_commit(seq, chain))
    return out


def test_logged_tail_goes_out_before_new_commits_with_the_first_head():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    commits = _chained(4)
    tail, new = commits[:3], commits[3]
    marks: list[int] = []
    p = Publisher(
        pub,
        HeadSigner(Ed25519PrivateKey.generate(), "n"),
        head_seq=2,
        head_chain=tail[-1].chain,
        head_every_s=3600,
        tail=tail,
        tail_after_s=0.5,  # the subscriber joins meanwhile (ZeroMQ slow joiner)
        on_head=marks.append,
    )
    t = threading.Thread(target=p.run)
    t.start()
    p.queue.put(new)  # durable during the grace period: must not overtake the tail
    got = []
    while sub.poll(3000) and len(got) < 6:
        got.append(decode(sub.recv_multipart()))
        if len(got) == 5:
            p.stop()
    t.join(5)
    assert [(m.TOPIC, m.seq) for m in got] == [
        ("commit", 0),
        ("commit", 1),
        ("commit", 2),
        ("head", 2),
        ("commit", 3),
        ("head", 3),  # the last head of a clean stop
    ]
    assert got[:3] == tail
    # Published heads are marked only once the tail they cover has gone out.
    assert marks == [2, 3]
    sub.close(0)
    ctx.term()


def test_no_tail_no_mark_before_anything_is_committed():
    ctx = zmq.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind_to_random_port("tcp://127.0.0.1")
    marks: list[int] = []
    p = Publisher(
        pub,
        HeadSigner(Ed25519PrivateKey.generate(), "n"),
        head_seq=-1,
        head_chain=GENESIS,
        on_head=marks.append,
    )
    p.head()
    assert marks == [] and p.heads == 0
    pub.close(0)
    ctx.term()
