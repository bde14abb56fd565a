"""A real agent process on loopback, watched by a raw pyzmq+msgpack subscriber.

The subscriber and opener here deliberately use neither fpmon.wire nor fpmon.chain: they
rebuild the chain with hashlib and the head message with struct, as an outside tool would.
"""

from __future__ import annotations

import hashlib
import struct
import threading
import time
from typing import Any

import msgpack
import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from fpmon.agents.client import submit
from fpmon.testing.spawn import AgentProcess, write_config

GENESIS = b"\x00" * 32
# bf16 numerics do not depend on torch threads (measured); one thread keeps test agents
# from spinning against each other's OpenMP threads on a loaded machine.
ONE_THREAD = {"threads": 1}


class RawSubscriber:
    def __init__(self, endpoint: str, curve: dict[str, bytes] | None = None) -> None:
        self.ctx = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.linger = 0
        for k, v in (curve or {}).items():
            setattr(self.sock, k, v)
        for topic in (b"commit", b"head", b"telemetry"):
            self.sock.setsockopt(zmq.SUBSCRIBE, topic)
        self.sock.connect(endpoint)
        self.seen: dict[str, list[dict[str, Any]]] = {"commit": [], "head": [], "telemetry": []}

    def pump(self, until: Any, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not until(self.seen):
            left = deadline - time.monotonic()
            assert left > 0, f"timed out; seen {[(k, len(v)) for k, v in self.seen.items()]}"
            if self.sock.poll(int(min(left, 0.5) * 1000)):
                topic, payload = self.sock.recv_multipart()
                self.seen[topic.decode()].append(msgpack.unpackb(payload, raw=False))

    def close(self) -> None:
        self.sock.close()


def head_ok(h: dict[str, Any]) -> bool:
    node = h["node"].encode()
    msg = b"fpmon-head-v1\x00" + struct.pack(">H", len(node)) + node
    msg += struct.pack(">Q", h["seq"]) + h["chain"]
    try:
        Ed25519PublicKey.from_public_bytes(h["pubkey"]).verify(h["sig"], msg)
    except Exception:
        return False
    return True


def raw_open(
    endpoint: str, seq: int, curve: dict[str, bytes] | None = None, timeout_s: float = 10.0
) -> dict[str, Any] | None:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    for k, v in (curve or {}).items():
        setattr(sock, k, v)
    sock.connect(endpoint)
    req = {"v": 1, "node": "verifier", "t": time.time(), "seq": seq, "nonce": b"n%d" % seq}
    sock.sndtimeo = int(timeout_s * 1000)  # no live pipe (refused handshake) blocks a DEALER
    try:
        sock.send_multipart([b"open", msgpack.packb(req, use_bin_type=True)])
        if not sock.poll(int(timeout_s * 1000)):
            return None
        topic, payload = sock.recv_multipart()
        assert topic == b"opened"
        return msgpack.unpackb(payload, raw=False)
    except zmq.Again:
        return None
    finally:
        sock.close()


def submit_many(endpoint: str, n: int, max_tokens: int = 4, **kw: Any) -> list[Any]:
    replies: list[Any] = [None] * n

    def one(i: int) -> None:
        replies[i] = submit(endpoint, f"request number {i} says hello", max_tokens, 60, **kw)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return replies


def check_chain(commits: list[dict[str, Any]], prev: bytes = GENESIS, first: int = 0) -> bytes:
    for i, c in enumerate(sorted(commits, key=lambda c: c["seq"])):
        assert c["seq"] == first + i, "gap in commitments"
        prev = hashlib.sha256(prev + c["record_digest"]).digest()
        assert c["chain"] == prev, f"chain broken at seq {c['seq']}"
    return prev


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("agent")
    cfg = write_config(
        d,
        "stream-node",
        engine=ONE_THREAD,
        publish={"head_every_s": 0.3},
        batching={"max_batch": 3, "max_wait_ms": 50},
    )
    with AgentProcess(cfg) as a:
        yield a


def test_commits_heads_telemetry_and_openings(agent):
    sub = RawSubscriber(agent.endpoints["publish"])
    try:
        sub.pump(lambda s: s["telemetry"])  # joined: nothing after this point is missed
        replies = submit_many(agent.endpoints["intake"], 5)
        assert all(r.status == "ok" and len(r.output_ids) == 4 for r in replies)
        assert sorted(r.seq for r in replies) == list(range(5))
        sub.pump(lambda s: len(s["commit"]) >= 5 and any(h["seq"] == 4 for h in s["head"]))
    finally:
        sub.close()
    commits = sub.seen["commit"]
    last_chain = check_chain(commits)
    assert {c["request_id"] for c in commits} == {r.request_id for r in replies}
    assert all(c["prefill_s"] > 0 and c["decode_s"] > 0 for c in commits)
    assert any(c["setup"]["batch_size"] > 1 for c in commits), "policy batched nothing"
    head = next(h for h in sub.seen["head"] if h["seq"] == 4)
    assert head_ok(head) and head["chain"] == last_chain
    assert not head_ok({**head, "seq": 3})
    tel = sub.seen["telemetry"][0]
    assert tel["gpus"] == [] and tel["source"] == "host" and tel["host"]["mem_total"] > 0
    # The engine runs in the agent's process: its CPU time is reported, GPU or not.
    last = sub.seen["telemetry"][-1]
    assert "engine device cpu" in last["scope"]
    assert last["engine"]["pid"] == agent.proc.pid and last["engine"]["cpu_s"] > 0

    for c in commits:
        o = raw_open(agent.endpoints["openings"], c["seq"])
        assert o["status"] == "ok"
        assert hashlib.sha256(o["record"]).digest() == c["record_digest"]
        rec = msgpack.unpackb(o["record"], raw=False)
        assert rec["seq"] == c["seq"] and rec["setup"]["slot"] < rec["setup"]["batch_size"]
    assert raw_open(agent.endpoints["openings"], 99)["status"] == "unknown"


def test_stats_command_reports_log(agent, capsys):
    from fpmon.cli import main

    assert main(["agent", "stats", "--config", str(agent.config)]) == 0
    out = capsys.readouterr().out
    assert "bytes per token" in out and "running" in out
    assert "seq -1" not in out
