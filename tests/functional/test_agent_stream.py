"""A real agent process on loopback, watched by a raw pyzmq+msgpack subscriber.

The subscriber and opener (fpmon/testing/raw.py) deliberately use neither fpmon.wire nor
fpmon.chain: they rebuild the chain with hashlib and the head message with struct, as an outside
tool would.
"""

from __future__ import annotations

import hashlib

import msgpack
import pytest

from fpmon.testing.raw import ONE_THREAD, RawSubscriber, check_chain, head_ok, raw_open, submit_many
from fpmon.testing.spawn import AgentProcess, write_config


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
