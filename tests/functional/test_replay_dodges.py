"""Nodes dodging replay, against one daemon over real sockets with real records: declaring
work beyond the caps, purging a fresh record (and one whose commit time is back-dated),
declaring a model the verifier has no reference for. Each is visible (alert, node suspect);
an honest node and an honest node answering late are judged `match` and stay unsuspected."""

from __future__ import annotations

import threading
from pathlib import Path

import msgspec
import pytest

from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.replay.store import Store
from fpmon.testing.fleet import ProverNode, daemon_doc, wait_subscribed, wait_verdicts

pytestmark = pytest.mark.timeout(180)
NAMES = ("honest", "late", "huge", "purger", "backdated", "mystery")


@pytest.fixture(scope="module")
def dodges(tmp_path_factory: pytest.TempPathFactory, tiny_engine, shared_engines):
    tmp = tmp_path_factory.mktemp("dodges")
    nodes = {n: ProverNode(n) for n in NAMES}
    e = tiny_engine("bfloat16", "sdpa")
    ids = e.encode("Nodes that would rather not be replayed")
    commits = {
        "honest": nodes["honest"].make(e, ids),
        "late": nodes["late"].make(e, ids),
        # Ran batch 1; declares and schedules 2048 (13 s and 1.2 GB to replay, before caps).
        "huge": nodes["huge"].make(e, ids, declare={"batch_size": 2048}),
        "purger": nodes["purger"].make(e, ids),
        "backdated": nodes["backdated"].make(e, ids),
        "mystery": nodes["mystery"].make(e, ids, model="mystery-7b"),
    }
    # Its commit claims to be two hours old, so a purge would look like honest retention.
    old = commits["backdated"]
    commits["backdated"] = msgspec.structs.replace(old, t=old.t - 7200)
    nodes["purger"].purge = nodes["backdated"].purge = True
    nodes["late"].delay_s = 1.5  # past the 0.5 s deadline (no retry), inside the grace
    doc = daemon_doc(
        tmp, list(nodes.values()), openings={"deadline_s": 0.5, "retries": 0, "grace_s": 20}
    )
    cfg = config.parse(tmp / "replay.toml", doc)
    daemon = ReplayDaemon(cfg, engine_factory=shared_engines)
    daemon.start()
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    try:
        wait_subscribed(list(nodes.values()), daemon)
        for name, c in commits.items():
            nodes[name].publish(c)
        got = wait_verdicts(Path(cfg.replay.store), len(NAMES), timeout=120)
        suspects = {n: daemon.sampler.is_suspect(n) for n in NAMES}
    finally:
        daemon.stop()
        thread.join(timeout=60)
        for n in nodes.values():
            n.close()
    store = Store(Path(cfg.replay.store))
    alerts = {a.node: a for a in store.alerts()}
    store.close()
    verdicts = {v["node"]: v for v in got}
    return verdicts, alerts, suspects


def test_honest_and_late_answers_are_judged_and_unsuspected(dodges) -> None:
    verdicts, alerts, suspects = dodges
    assert verdicts["honest"]["status"] == "match"
    # Its answer came 1 s after the daemon gave up waiting: judged within the grace.
    assert verdicts["late"]["status"] == "match", verdicts["late"]["reason"]
    assert not suspects["honest"] and not suspects["late"]
    assert "honest" not in alerts and "late" not in alerts


def test_work_beyond_the_caps_is_unverifiable_warned_and_suspect(dodges) -> None:
    verdicts, alerts, suspects = dodges
    v = verdicts["huge"]
    assert v["status"] == "unverifiable" and v["replay_s"] == 0.0
    assert "batch size 2048" in v["reason"] and "max_batch=256" in v["reason"]
    a = alerts["huge"]
    assert (a.kind, a.severity) == ("unverifiable", "warning") and "max_batch" in a.message
    assert suspects["huge"]


def test_a_fresh_purge_is_a_critical_unopened(dodges) -> None:
    verdicts, alerts, suspects = dodges
    v = verdicts["purger"]
    assert v["status"] == "unopened", v
    assert "under the minimum retention of 3600 s" in v["reason"]
    assert (alerts["purger"].kind, alerts["purger"].severity) == ("unopened", "critical")
    assert suspects["purger"]


def test_a_back_dated_purge_is_still_unopened_and_suspect(dodges) -> None:
    # `t` older than its arrival is believed (gap repair fetches legitimately old commits, and
    # an honest purge of those is no dodge): not critical, but never honest-looking either.
    verdicts, alerts, suspects = dodges
    v = verdicts["backdated"]
    assert v["status"] == "unopened" and "purged by the node" in v["reason"]
    assert (alerts["backdated"].kind, alerts["backdated"].severity) == ("unopened", "warning")
    assert suspects["backdated"]


def test_a_model_without_reference_makes_the_node_suspect(dodges) -> None:
    verdicts, alerts, suspects = dodges
    v = verdicts["mystery"]
    assert v["status"] == "unverifiable" and "mystery-7b" in v["reason"]
    assert "suspect rate" in v["reason"]
    assert (alerts["mystery"].kind, alerts["mystery"].severity) == ("unverifiable", "warning")
    assert suspects["mystery"]
