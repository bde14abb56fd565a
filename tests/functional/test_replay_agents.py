"""End to end with real agent processes (issue 4): honest and lying agents, one daemon.

The agents are spawned as `fpmon agent` processes; requests go through their intake; the daemon
subscribes to their PUBs, opens over their openings ROUTERs and judges with real numerics.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fpmon.agents.client import submit
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.fleet import wait_verdicts
from fpmon.testing.spawn import AgentProcess, write_config

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]


def test_real_agents_honest_matches_and_batch_liar_is_attributed(
    tmp_path: Path, shared_engines
) -> None:
    engine = {"model": "tiny", "dtype": "float32", "attn": "sdpa", "device": "cpu"}
    common = {
        "engine": engine,
        "batching": {"max_batch": 1, "max_wait_ms": 5},
        "security": {"curve": False},
        "publish": {"head_every_s": 0.2},
    }
    honest = AgentProcess(write_config(tmp_path / "a", "honest", **common))
    liar = AgentProcess(
        write_config(
            tmp_path / "b",
            "liar",
            **common,
            # Strips its fillers from the row manifest too (else covert_rows, before any
            # replay: test_replay_covert_rows.py): only the float32 numerics show the batch.
            redteam={"enabled": True, "actual_batch": 4, "hide_rows": "strip"},
        )
    )
    with honest, liar:
        nodes = [a.node_entry() for a in (honest, liar)]
        key = tmp_path / "sampling.key"
        key.write_text("11" * 32)
        key.chmod(0o600)
        doc = {
            "replay": {
                "store": str(tmp_path / "replay.sqlite"),
                "publish": "tcp://127.0.0.1:0",
                "state": "tcp://127.0.0.1:0",
            },
            "sampling": {"key_file": str(key), "rate": 1.0},
            "openings": {"deadline_s": 3.0, "retries": 2},
            "attribution": {"fields": ["batch_size", "attn_impl", "dtype"]},
            "node": nodes,
        }
        cfg = config.parse(tmp_path / "replay.toml", doc)
        daemon = ReplayDaemon(cfg, engine_factory=shared_engines)
        daemon.start()
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            deadline_ok = False
            for _ in range(100):  # agents publish telemetry at 1 Hz: wait to be subscribed
                stats = daemon.intake.stats
                if all(stats[n["name"]].last_telemetry_t > 0 for n in nodes):
                    deadline_ok = True
                    break
                threading.Event().wait(0.1)
            assert deadline_ok, "the daemon never heard both agents"
            for a in (honest, liar):
                for i in range(2):
                    r = submit(a.endpoints["intake"], f"request {i} to the fleet", 6, 60)
                    assert r.status == "ok", r
            got = wait_verdicts(cfg.replay.store, 4, timeout=180)
        finally:
            daemon.stop()
            thread.join(timeout=60)
    by = {}
    for v in got:
        by.setdefault(v["node"], []).append(v)
    assert [v["status"] for v in by["honest"]] == ["match", "match"], by["honest"]
    assert [v["status"] for v in by["liar"]] == ["mismatch", "mismatch"]
    for v in by["liar"]:
        assert v["attribution"][0]["field"] == "batch_size" and v["attribution"][0]["exact"]


def test_over_curve_an_allowlisted_verifier_opens_and_a_stranger_cannot(
    tmp_path: Path, curve_cert, shared_engines
) -> None:
    import shutil

    import zmq.auth

    from fpmon.agents.keys import keygen

    keygen(tmp_path / "keys")
    for who in ("verifier", "stranger", "client"):
        curve_cert(str(tmp_path), who)
    for who, folder in (("verifier", "verifiers"), ("client", "clients")):
        (tmp_path / folder).mkdir()
        shutil.copy(tmp_path / f"{who}.key", tmp_path / folder)
    agent = AgentProcess(
        write_config(
            tmp_path / "a",
            "sealed",
            engine={"model": "tiny", "dtype": "bfloat16", "attn": "sdpa", "device": "cpu"},
            batching={"max_batch": 1, "max_wait_ms": 5},
            security={
                "curve": True,
                "keys_dir": str(tmp_path / "keys"),
                "clients_dir": str(tmp_path / "clients"),
                "verifiers_dir": str(tmp_path / "verifiers"),
            },
        )
    )
    server_pub, _ = zmq.auth.load_certificate(str(tmp_path / "keys" / "agent.key"))
    with agent:
        node = agent.node_entry(curve_pubkey=server_pub.decode())
        results = {}
        for who in ("verifier", "stranger"):
            key = tmp_path / f"{who}.sampling"
            key.write_text("22" * 32)
            key.chmod(0o600)
            doc = {
                "replay": {
                    "store": str(tmp_path / f"{who}.sqlite"),
                    "publish": "tcp://127.0.0.1:0",
                    "state": "tcp://127.0.0.1:0",
                    "curve_secret_file": str(tmp_path / f"{who}.key_secret"),
                    "state_clients_dir": str(tmp_path / "clients"),
                },
                "sampling": {"key_file": str(key), "rate": 1.0},
                "openings": {"deadline_s": 1.0, "retries": 1, "grace_s": 1.0},
                "node": [node],
            }
            cfg = config.parse(tmp_path / f"{who}.toml", doc)
            daemon = ReplayDaemon(cfg, engine_factory=shared_engines)
            daemon.start()
            thread = threading.Thread(target=daemon.run, daemon=True)
            thread.start()
            try:
                for _ in range(100):  # the encrypted PUB reaches any Curve client
                    if daemon.intake.stats["sealed"].last_telemetry_t > 0:
                        break
                    threading.Event().wait(0.1)
                r = submit(
                    agent.endpoints["intake"],
                    f"sealed request for {who}",
                    4,
                    60,
                    curve=(
                        str(tmp_path / "client.key_secret"),
                        str(tmp_path / "keys" / "agent.key"),
                    ),
                )
                assert r.status == "ok", r
                got = wait_verdicts(cfg.replay.store, 1, timeout=60)
            finally:
                daemon.stop()
                thread.join(timeout=60)
            results[who] = got
    assert [v["status"] for v in results["verifier"]] == ["match"]
    (refused,) = results["stranger"]  # the agent's ZAP refuses its key: never connected
    assert refused["status"] == "unopened" and "not reachable" in refused["reason"]
