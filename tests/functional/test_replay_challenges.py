"""Verifier-timed challenges end to end: real `fpmon agent` processes, ordinary client load, one
replay daemon sending its own requests through the agents' intakes, timing them, opening and
replaying their records, and judging.

An honest node under load: every challenge judged, every record `match`, no alert. A node that
does covert work after each batch (`[redteam] hidden_work_s`, outside its committed times):
`suspected_hidden_work` from the challenges. Over Curve the daemon is an allowlisted intake
client; a node killed and restarted under challenge costs warnings, never an accusation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import zmq.auth

from fpmon.agents.keys import keygen
from fpmon.monitor.demo import free_ports, tcp
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.challenge_fleet import (
    RunningDaemon,
    agent_config,
    allow_client,
    daemon_doc,
    wait_heard,
)
from fpmon.testing.load import ClientLoad
from fpmon.testing.spawn import AgentProcess
from fpmon.wire import StateReply, decode, encode

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]
KINDS = ("suspected_hidden_work", "challenge_failed", "served_mismatch")
HIDDEN_S = 6.0  # covert seconds per batch: well beyond the band (see the bench numbers)


def alerts(d: ReplayDaemon, node: str) -> list[Any]:
    return [a for a in d.store.alerts(limit=1000) if a.node == node and a.kind in KINDS]


def judged(d: ReplayDaemon, node: str) -> int:
    assert d.challenges is not None
    return d.challenges.nodes[node].counts["judged"]


def wait_for(what: str, cond: Any, timeout_s: float) -> None:
    """Poll another process's progress (the agents and the daemon run on their own)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_challenges_pass_an_honest_node_under_load_and_catch_hidden_work(
    tmp_path: Path, tiny_engine, shared_engines
) -> None:
    tiny_engine("bfloat16", "sdpa")  # loaded before the daemon times its first replay
    honest = AgentProcess(agent_config(tmp_path / "h", "honest"))
    liar = AgentProcess(
        agent_config(tmp_path / "l", "liar", redteam={"enabled": True, "hidden_work_s": HIDDEN_S})
    )
    with honest, liar:
        nodes = [a.node_entry(intake=True) for a in (honest, liar)]
        doc = daemon_doc(tmp_path, nodes, 1.0, 8)
        with RunningDaemon(tmp_path, doc, shared_engines) as d:
            wait_heard(d, ["honest", "liar"])
            # Busy enough that challenges meet queued work: at 2 requests/s none of 8 did,
            # once in a full-suite run (the node idles between tiny requests).
            load = ClientLoad(honest.endpoints["intake"], rate=4.0, max_tokens=8)
            load.start()
            try:
                wait_for(
                    "the liar's alert and 8 honest challenges",
                    lambda: (
                        judged(d, "honest") >= 8
                        and any(a.kind == "suspected_hidden_work" for a in alerts(d, "liar"))
                    ),
                    420,
                )
            finally:
                load.stop()
                load.join(5)
            state = d.state_reply()
            verdicts = {(v.node, v.seq): v.status for v in d.store.verdicts(limit=10_000)}
            honest_alerts, liar_alerts = alerts(d, "honest"), alerts(d, "liar")
            metric = d.metrics.registry.get_sample_value
            judged_total = metric("fpmon_replay_challenges_total", {"outcome": "judged"})
    assert load.ok >= 10  # the honest node really was serving ordinary traffic meanwhile
    # the honest node: its challenges were opened (the daemon samples nothing else here: rate
    # 0), replayed bit-exact and judged within the band; no alert of either kind
    assert honest_alerts == []
    h = state.nodes["honest"].challenges
    assert h is not None and h.judged >= 8 and h.failed == 0 and not h.alerted, h
    assert all(verdicts[("honest", p.seq)] == "match" for p in h.recent)
    queued = [p.queue_s for p in h.recent]
    assert sum(q > 0 for q in queued) >= 1, queued  # some waited behind the load
    # the liar: the verifier's stopwatch shows the covert work its commitments leave out
    (alert,) = [a for a in liar_alerts if a.kind == "suspected_hidden_work"]
    det = alert.details
    assert det["source"] == "challenge" and alert.severity == "warning"
    assert det["latency_s"] > det["limit_s"] >= det["slack_s"]
    assert det["unexplained_s"] > HIDDEN_S * 0.8  # its own record admits little of it
    assert verdicts[("liar", alert.seq)] == "match"  # the numerics are honest: time is not
    assert judged_total is not None and judged_total >= 10
    # the per-node summary crosses the wire in the signed state
    again = decode(encode(state), expect=("state",))
    assert isinstance(again, StateReply) and again.nodes["liar"].challenges.alerted  # type: ignore[union-attr]


def test_over_curve_a_restart_under_challenge_is_only_a_warning(
    tmp_path: Path, tiny_engine, curve_cert, shared_engines
) -> None:
    keygen(tmp_path / "keys")
    for who in ("replay", "stranger"):
        curve_cert(str(tmp_path), who)
    # the operator step: the daemon's key may open records and submit work
    allow_client(tmp_path / "verifiers", tmp_path / "replay.key")
    allow_client(tmp_path / "clients", tmp_path / "replay.key")
    intake, publish, openings = (tcp(p) for p in free_ports(3))
    cfg = agent_config(
        tmp_path / "a",
        "sealed",
        endpoints={"intake": intake, "publish": publish, "openings": openings},
        security={
            "curve": True,
            "keys_dir": str(tmp_path / "keys"),
            "clients_dir": str(tmp_path / "clients"),
            "verifiers_dir": str(tmp_path / "verifiers"),
        },
    )
    server_pub, _ = zmq.auth.load_certificate(str(tmp_path / "keys" / "agent.key"))
    tiny_engine("bfloat16", "sdpa")
    agent = AgentProcess(cfg).start()
    try:
        node = agent.node_entry(intake=True, curve_pubkey=server_pub.decode())
        curve = {
            "curve_secret_file": str(tmp_path / "replay.key_secret"),
            "state_clients_dir": str(tmp_path / "clients"),
        }
        doc = daemon_doc(tmp_path, [node], 1.0, 8, replay=curve, challenges={"timeout_s": 4.0})
        with RunningDaemon(tmp_path, doc, shared_engines) as d:
            wait_heard(d, ["sealed"])
            wait_for("2 judged challenges", lambda: judged(d, "sealed") >= 2, 180)
            agent.kill()  # kill -9: whatever is in flight is lost
            wait_for("a failed challenge", lambda: alerts(d, "sealed"), 60)
            agent = AgentProcess(cfg).start()
            before = judged(d, "sealed")
            wait_for("2 more after the restart", lambda: judged(d, "sealed") >= before + 2, 240)
            got = alerts(d, "sealed")
        assert got and all(a.kind == "challenge_failed" for a in got), got
        assert all(a.severity == "warning" for a in got)
        assert {a.details["why"] for a in got} <= {"timeout", "unreachable", "unopened"}
        # a client key the agent does not list never reaches its intake
        (tmp_path / "b").mkdir()
        stranger = daemon_doc(
            tmp_path / "b",
            [node],
            0.2,
            8,
            replay=curve,
            challenges={
                "timeout_s": 2.0,
                "curve_secret_file": str(tmp_path / "stranger.key_secret"),
            },
        )
        with RunningDaemon(tmp_path / "b", stranger, shared_engines) as d2:
            wait_for("the stranger's failure", lambda: alerts(d2, "sealed"), 60)
            (a, *_) = alerts(d2, "sealed")
        assert a.kind == "challenge_failed" and a.details["why"] == "unreachable"
        assert agent.read_status()["auth_denied"].get("intake:unauthenticated", 0) >= 1
    finally:
        agent.stop()
