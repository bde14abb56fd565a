"""The demo's headless summary: an overall pass/fail, each node's why, and a readable table
(not Python dicts). Fed real wire messages, no fleet."""

from __future__ import annotations

import io

from fpmon.monitor.demo import NODES, print_summary, summary
from fpmon.monitor.model import FleetModel
from fpmon.testing import synth


def demo_like_model(
    honest_status: str = "match", hidden_alert: str = "node-hidden", hidden_status: str = "match"
) -> FleetModel:
    m = FleetModel()
    for seq in range(3):
        m.apply(synth.verdict("node-honest", seq, honest_status, "dtype", "bfloat16"))
        m.apply(synth.verdict("node-batch", seq, "mismatch", "batch_size", 4))
        m.apply(synth.verdict("node-attn", seq, "mismatch", "attn_impl", "eager"))
        m.apply(synth.verdict("node-dtype", seq, "mismatch", "dtype", "bfloat16"))
        m.apply(synth.verdict("node-tamper", seq, "bad_opening"))
        m.apply(synth.verdict("node-hidden", seq, hidden_status, "dtype", "bfloat16"))
        m.apply(synth.alert("node-batch", "mismatch", seq))
    if hidden_alert:  # the hidden work's only evidence: its activity, not its records
        m.apply(synth.alert(hidden_alert, "undeclared_capacity", 0))
    return m


def test_a_demo_that_caught_every_cheat_passes():
    out = summary(demo_like_model(), 40.0)
    assert out["pass"] is True and out["failed"] == [] and out["problems"] == []
    by = {n["node"]: n for n in out["nodes"]}
    assert set(by) == {n.name for n in NODES} and all(n["pass"] for n in by.values())
    assert by["node-batch"]["why"] == "3 mismatches, every one attributed to batch_size"
    assert by["node-batch"]["alerts"] == {"mismatch": 3}  # alerts, not alert groups
    assert by["node-hidden"]["why"] == "undeclared_capacity 1; 3 verdicts, all match"


def test_hidden_work_missed_or_charged_to_the_honest_node_fails() -> None:
    out = summary(demo_like_model(hidden_alert=""), 40.0)
    assert out["failed"] == ["node-hidden"]
    assert "no undeclared_capacity or suspected_hidden_work alert" in out["nodes"][-1]["why"]
    out = summary(demo_like_model(hidden_alert="node-honest"), 40.0)
    assert set(out["failed"]) == {"node-honest", "node-hidden"}
    honest = next(n for n in out["nodes"] if n["node"] == "node-honest")
    assert honest["why"] == "honest node alerted undeclared_capacity 1"
    out = summary(demo_like_model(hidden_status="mismatch"), 40.0)
    assert out["failed"] == ["node-hidden"]
    assert out["nodes"][-1]["why"] == "hidden-work node's records judged mismatch 3"


def test_a_missed_or_wrong_verdict_fails_and_says_which():
    out = summary(demo_like_model(honest_status="mismatch"), 40.0)
    assert out["pass"] is False and out["failed"] == ["node-honest"]
    honest = next(n for n in out["nodes"] if n["node"] == "node-honest")
    assert "honest node judged" in honest["why"]
    m = FleetModel()  # nothing judged yet
    out = summary(m, 5.0, problems=["replay exited (1)"])
    assert out["pass"] is False and len(out["failed"]) == len(NODES)
    assert "no verdict yet" in out["nodes"][0]["why"]


def test_the_text_summary_is_a_table_not_dicts():
    buf = io.StringIO()
    print_summary(summary(demo_like_model(), 40.0), file=buf)
    text = buf.getvalue()
    assert "{" not in text and "'" not in text, text
    assert "node-batch" in text and "batch_size 3" in text and "PASS" in text
    assert text.strip().splitlines()[-1].startswith("PASS")
    buf = io.StringIO()
    print_summary(summary(demo_like_model(honest_status="mismatch"), 40.0), file=buf)
    text = buf.getvalue()
    assert "{" not in text and "FAIL: honest node judged mismatch 3" in text, text
    assert text.strip().splitlines()[-1] == "FAIL: node-honest"
