"""Covert rows end to end (issue 14, item 3): real agent processes, one daemon, every record opened.

The batch cheat (`[redteam] actual_batch = 4`) runs each request beside 3 filler rows. In
bfloat16 on this CPU batch 4 computes the same bits as batch 1, so the numerics alone never
catch it here (as on the H200 with short requests); its row manifest does, on every record. A
cheat that lists invented requests for its fillers (`hide_rows = "forge"`, batch 4 declared
truthfully) is contradicted by its own next commitments. The honest agent, serving batches of
several real requests, gets no covert_rows.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from fpmon.agents.client import submit
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.replay.rows import BLIND_SPOT
from fpmon.replay.store import Store
from fpmon.testing.fleet import wait_verdicts
from fpmon.testing.spawn import AgentProcess, write_config

pytestmark = [pytest.mark.timeout(400), pytest.mark.slow]


def burst(agent: AgentProcess, name: str, n: int) -> None:
    """`n` requests at once: an honest agent batches them together, a cheat runs them in turn."""
    with ThreadPoolExecutor(n) as pool:
        replies = list(
            pool.map(
                lambda i: submit(agent.endpoints["intake"], f"{name} asks {i}", 4, 120), range(n)
            )
        )
    assert all(r.status == "ok" for r in replies), replies


def test_batch_cheats_are_covert_rows_on_every_opened_record(
    tmp_path: Path, shared_engines
) -> None:
    common = {
        "engine": {"model": "tiny", "dtype": "bfloat16", "attn": "sdpa", "device": "cpu"},
        "batching": {"max_batch": 4, "max_wait_ms": 200},
        "security": {"curve": False},
        "publish": {"head_every_s": 0.2},
    }
    agents = {
        "honest": AgentProcess(write_config(tmp_path / "h", "honest", **common)),
        "filler": AgentProcess(
            write_config(
                tmp_path / "f", "filler", **common, redteam={"enabled": True, "actual_batch": 4}
            )
        ),
        "forger": AgentProcess(
            write_config(
                tmp_path / "g",
                "forger",
                **common,
                redteam={"enabled": True, "actual_batch": 4, "hide_rows": "forge"},
            )
        ),
    }
    counts = {"honest": 6, "filler": 3, "forger": 4}
    with agents["honest"], agents["filler"], agents["forger"]:
        nodes = [a.node_entry() for a in agents.values()]
        key = tmp_path / "sampling.key"
        key.write_text("14" * 32)
        key.chmod(0o600)
        doc = {
            "replay": {
                "store": str(tmp_path / "replay.sqlite"),
                "publish": "tcp://127.0.0.1:0",
                "state": "tcp://127.0.0.1:0",
            },
            "sampling": {"key_file": str(key), "rate": 1.0},
            "openings": {"deadline_s": 5.0, "retries": 2},
            "attribution": {"enabled": False},
            "queue": {"max": 64},
            "node": nodes,
        }
        cfg = config.parse(tmp_path / "replay.toml", doc)
        daemon = ReplayDaemon(cfg, engine_factory=shared_engines)
        daemon.start()
        thread = threading.Thread(target=daemon.run, daemon=True)
        thread.start()
        try:
            heard = threading.Event()
            for _ in range(200):  # agents publish telemetry at 1 Hz: wait to be subscribed
                if all(daemon.intake.stats[n].last_telemetry_t > 0 for n in agents):
                    heard.set()
                    break
                heard.wait(0.1)
            assert heard.is_set(), "the daemon never heard every agent"
            for name, n in counts.items():
                burst(agents[name], name, n)
            got = wait_verdicts(cfg.replay.store, sum(counts.values()), timeout=300)
        finally:
            daemon.stop()
            thread.join(timeout=60)
    by: dict[str, list[dict]] = {}
    for v in got:
        by.setdefault(v["node"], []).append(v)
    assert {k: len(v) for k, v in by.items()} == counts, by
    assert [v["status"] for v in by["honest"]] == ["match"] * counts["honest"], by["honest"]
    # ... batched with each other: manifests of several rows, each linked to its siblings
    assert max(v["declared"]["batch_size"] for v in by["honest"]) > 1, by["honest"]
    for v in by["filler"]:
        assert v["status"] == "covert_rows", v
        assert "rows 1, 2, 3 of 4 ran with no client request" in v["reason"]
        assert "the manifest lists 4 rows, but the record declares batch 1" in v["reason"]
    forged = sorted(by["forger"], key=lambda v: v["seq"])
    # Every forged record whose claimed rows the node's chain has since reached is caught; the
    # last batch before the node falls silent has nothing to contradict it yet (docs/REPLAY.md).
    for v in forged[:-1]:
        assert v["status"] == "covert_rows", v
        assert "no committed request stands behind row" in v["reason"]
    store = Store(cfg.replay.store)
    try:
        covert = [a for a in store.alerts() if a.kind == "covert_rows"]
    finally:
        store.close()
    assert {a.node for a in covert} == {"filler", "forger"}
    assert all(a.severity == "critical" and a.details["blind_spot"] == BLIND_SPOT for a in covert)
    last = forged[-1]
    assert last["status"] == "covert_rows" or any(
        "not committed when judged" in n for n in last["evidence"].get("notes", [])
    ), last
