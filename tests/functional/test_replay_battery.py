"""The adversarial battery: real records from the tiny model, real chains, real sockets.

One daemon verifies a fleet of prover nodes, each honest or lying in one way; every record is
sampled. What each node gets must be what its lie deserves — and an honest node only `match`.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from fpmon.chain import sign_head
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.fleet import ProverNode, daemon_doc, wait_subscribed, wait_verdicts
from fpmon.wire import Head, encode

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def battery(tmp_path_factory: pytest.TempPathFactory, tiny_engine, shared_engines):
    tmp = tmp_path_factory.mktemp("battery")
    names = ["honest", "batch", "rows", "attn", "dtype", "tamper", "chain", "silent", "unknown"]
    nodes = {n: ProverNode(n) for n in names}
    e_bf = tiny_engine("bfloat16", "sdpa")
    ids = e_bf.encode("The verifier replays a secret sample of records")
    ids2 = e_bf.encode("Rounding leaves a fingerprint")
    f32 = tiny_engine("float32", "sdpa")
    commits: dict[str, list] = {n: [] for n in names}
    # Honest: bf16 batch 1; a float32 batch of 4 requests, every row a record, as declared.
    commits["honest"] += [
        nodes["honest"].make(e_bf, ids),
        *nodes["honest"].make_batch(f32, [ids, ids2, e_bf.encode("a third request"), ids2]),
    ]
    # Declares batch 1, ran batch 4 (float32: on this CPU only float32 decode shows batch size),
    # its fillers stripped from everything it records: only the numerics show it.
    commits["batch"].append(
        nodes["batch"].make(f32, ids, batch_size=4, slot=0, declare={"batch_size": 1, "slot": 0})
    )
    # Declares the batch 4 it ran, 3 of its rows fillers no client asked for: covert rows.
    commits["rows"].append(nodes["rows"].make(e_bf, ids, batch_size=4, slot=0))
    # Declares sdpa, ran eager.
    commits["attn"].append(
        nodes["attn"].make(tiny_engine("bfloat16", "eager"), ids, declare={"attn_impl": "sdpa"})
    )
    # Declares float32, ran bfloat16.
    commits["dtype"].append(nodes["dtype"].make(e_bf, ids, declare={"dtype": "float32"}))
    commits["tamper"].append(nodes["tamper"].make(e_bf, ids))
    nodes["tamper"].tamper = True
    commits["chain"] += [nodes["chain"].make(e_bf, ids) for _ in range(5)]
    commits["silent"].append(nodes["silent"].make(e_bf, ids))
    nodes["silent"].silent = True
    commits["unknown"].append(nodes["unknown"].make(e_bf, ids, model="mystery-7b"))

    doc = daemon_doc(
        tmp,
        list(nodes.values()),
        openings={"deadline_s": 0.5, "retries": 1},
        attribution={"fields": ["batch_size", "attn_impl", "dtype"]},
    )
    cfg = config.parse(tmp / "replay.toml", doc)
    daemon = ReplayDaemon(cfg, engine_factory=shared_engines)
    daemon.start()
    thread = threading.Thread(target=daemon.run, daemon=True)
    thread.start()
    wait_subscribed(list(nodes.values()), daemon)
    for name, cs in commits.items():
        if name == "chain":
            # seq 0, 1, then 3 (2 held back), then 2 late (reordered), then 4; then a head
            # signed over seq 5, which its log does not hold.
            for i in (0, 1, 3, 2, 4):
                nodes[name].publish(cs[i])
            n = nodes[name]
            ghost = os.urandom(32)
            sig = sign_head(n.key, name, 5, ghost)
            n.pub.send_multipart(
                encode(Head(node=name, t=time.time(), seq=5, chain=ghost, sig=sig, pubkey=n.pubkey))
            )
        else:
            for c in cs:
                nodes[name].publish(c)
    expected = 5 + 1 + 1 + 1 + 1 + 1 + 6 + 1 + 1
    verdicts = wait_verdicts(Path(cfg.replay.store), expected, timeout=180)
    state = daemon.state_reply()
    daemon.stop()
    thread.join(timeout=60)
    for n in nodes.values():
        n.close()
    by_node: dict[str, list[dict]] = {}
    for v in verdicts:
        by_node.setdefault(v["node"], []).append(v)
    return by_node, state


def statuses(by_node, node: str) -> list[str]:
    return sorted(v["status"] for v in by_node.get(node, []))


def test_honest_node_only_matches(battery) -> None:
    by_node, _ = battery
    assert statuses(by_node, "honest") == ["match"] * 5


def test_rows_no_client_asked_for_are_covert(battery) -> None:
    by_node, _ = battery
    (v,) = by_node["rows"]
    assert v["status"] == "covert_rows" and "rows 1, 2, 3 of 4" in v["reason"], v
    assert v["replay_s"] == 0.0  # decided on the record: nothing replayed


@pytest.mark.parametrize(
    ("node", "field"), [("batch", "batch_size"), ("attn", "attn_impl"), ("dtype", "dtype")]
)
def test_lies_about_the_setup_are_mismatches_attributed_to_the_field(battery, node, field):
    by_node, _ = battery
    (v,) = by_node[node]
    assert v["status"] == "mismatch"
    best = v["attribution"][0]
    assert best["field"] == field and best["exact"], v["attribution"]
    # The evidence points at the field first (replay/hints.py): only its values are replayed.
    assert {a["field"] for a in v["attribution"]} == {field}, v["attribution"]
    assert v["evidence"]["first_diff"]


def test_tampered_opening_is_bad_opening(battery) -> None:
    by_node, _ = battery
    (v,) = by_node["tamper"]
    assert v["status"] == "bad_opening" and "record_digest" in v["reason"]


def test_reordering_is_held_and_a_signed_ghost_breaks_the_chain(battery) -> None:
    """Out-of-order delivery is held until it links: every record verifies. A position the
    node signed but its log does not hold is the break, on the node's own signature."""
    by_node, _ = battery
    breaks = {v["seq"]: v["reason"] for v in by_node["chain"] if v["status"] == "chain_break"}
    assert list(breaks) == [5] and breaks[5].startswith("gap"), breaks
    others = [v["status"] for v in by_node["chain"] if v["seq"] in range(5)]
    assert others == ["match"] * 5


def test_silent_node_is_unopened_and_unknown_model_unverifiable(battery) -> None:
    by_node, _ = battery
    assert statuses(by_node, "silent") == ["unopened"]
    (v,) = by_node["unknown"]
    assert v["status"] == "unverifiable" and "mystery-7b" in v["reason"]


def test_state_snapshot_counts_per_node(battery) -> None:
    _, state = battery
    honest = state.nodes["honest"]
    assert honest.commits == 5 and honest.verified == 5
    assert honest.verdicts == {"match": 5}
    assert state.nodes["chain"].chain_head_seq == 4
    assert {a.kind for a in state.alerts} >= {
        "mismatch",
        "chain_break",
        "bad_opening",
        "unopened",
        "covert_rows",
    }
