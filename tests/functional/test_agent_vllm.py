"""An agent hosting vLLM (engine.kind = "vllm"): batched requests become committed records."""

from __future__ import annotations

import hashlib
import importlib.util

import msgpack
import pytest

from fpmon.testing.raw import RawSubscriber, check_chain, raw_open, submit_many
from fpmon.testing.spawn import AgentProcess, write_config

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed"),
]


def test_vllm_agent_commits_and_opens(tmp_path):
    cfg = write_config(
        tmp_path, "vllm-node", engine={"kind": "vllm"}, batching={"max_wait_ms": 200}
    )
    with AgentProcess(cfg).start(timeout_s=300) as a:
        sub = RawSubscriber(a.endpoints["publish"])
        sub.pump(lambda s: s["telemetry"])
        replies = submit_many(a.endpoints["intake"], 3, max_tokens=4)
        assert [r.status for r in replies] == ["ok"] * 3, [r.reason for r in replies]
        sub.pump(lambda s: len(s["commit"]) >= 3)
        sub.close()
        check_chain(sub.seen["commit"])
        for c in sub.seen["commit"]:
            assert c["setup"]["engine"] == "vllm"
            o = raw_open(a.endpoints["openings"], c["seq"])
            assert hashlib.sha256(o["record"]).digest() == c["record_digest"]
            rec = msgpack.unpackb(o["record"], raw=False)
            assert rec["probes"] and len(rec["output_ids"]) == 4
