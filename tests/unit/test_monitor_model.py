"""The monitor's state model: plain Python, no Textual, fed real wire messages."""

from __future__ import annotations

import sys

import msgpack
import msgspec
import pytest

from fpmon.monitor.model import (
    BAD_STATUSES,
    RATE_WINDOW,
    FleetModel,
    Limits,
    attribution_fields,
    evidence_layers,
)
from fpmon.testing import synth
from fpmon.wire import Candidate, NodeSummary, StateReply, WireError, decode, encode


def roundtrip(msg):
    return decode(encode(msg))  # what the feed hands the model: decoded under limits


def test_model_imports_no_textual():
    import subprocess

    code = "import fpmon.monitor.model, fpmon.monitor.feed, sys; print('textual' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_rows_health_and_attribution():
    m = FleetModel()
    for i in range(3):
        m.apply(roundtrip(synth.commit("honest", i)))
        m.apply(roundtrip(synth.commit("cheat", i)))
    m.apply(roundtrip(synth.telemetry("honest", gpus=8, util=40.0)))
    m.apply(roundtrip(synth.verdict("honest", 1)))
    m.apply(roundtrip(synth.verdict("cheat", 1, "mismatch", "batch_size", 4)))
    honest, cheat = m.nodes["honest"], m.nodes["cheat"]
    assert honest.health == "ok" and honest.gpus == 8 and honest.util == 40.0
    assert honest.mem_total == 8 * 80 * 2**30
    assert cheat.health == "flagged"
    assert cheat.attributions == {"batch_size": 1}
    assert cheat.last_attribution == "batch_size"
    assert honest.sampled == 1 / 3 and honest.verified == 1 / 3 and cheat.verified == 0.0
    data = m.to_json()
    assert [n["node"] for n in data["nodes"]] == ["cheat", "honest"]
    assert data["nodes"][0]["attributions"] == {"batch_size": 1}
    assert data["nodes"][0]["attribution_status"] == {"exact": 1}


def test_covert_rows_flag_the_node_and_name_the_finding():
    m = FleetModel()
    m.apply(roundtrip(synth.commit("hider", 1)))
    m.apply(roundtrip(synth.verdict("hider", 1, "covert_rows")))
    row = m.nodes["hider"]
    assert row.health == "flagged" and row.last_attribution == "covert_rows"
    assert row.verdicts == {"covert_rows": 1} and row.verified == 0.0


def test_a_mismatch_without_attribution_says_why():
    m = FleetModel()
    v = synth.verdict("cheat", 1, "mismatch", "dtype", "bfloat16")
    ev = msgspec.structs.replace(v.evidence, attribution_status="budget")
    budget = msgspec.structs.replace(v, attribution=[], evidence=ev)
    m.apply(roundtrip(budget))
    row = m.nodes["cheat"]
    assert row.last_attribution == "unattributed (budget)"
    assert row.attribution_status == {"budget": 1} and row.attributions == {}
    old = msgspec.structs.replace(
        v, seq=2, attribution=[], evidence=msgspec.structs.replace(ev, attribution_status="")
    )
    m.apply(roundtrip(old))  # a verifier that does not say why
    assert row.last_attribution == "unattributed" and row.attribution_status["unstated"] == 1


def test_attribution_names_the_best_candidate_fields():
    v = synth.verdict("n", 1, "mismatch", "attn_impl", "eager")
    assert attribution_fields(v) == ["attn_impl"]
    pair = msgspec.structs.replace(v, attribution=[Candidate(field="batch_size+dtype")])
    assert attribution_fields(pair) == ["batch_size", "dtype"]
    assert evidence_layers(v)[1][0] == "keys.L1"


def test_connection_states_follow_message_age():
    clock = [100.0]
    m = FleetModel(Limits(stale_after_s=2, lost_after_s=5), clock=lambda: clock[0])
    m.apply(synth.telemetry("n"))
    m.tick()
    assert m.nodes["n"].connection == "live"
    clock[0] += 3
    m.tick()
    assert m.nodes["n"].connection == "stale"
    clock[0] += 3
    m.tick()
    assert m.nodes["n"].connection == "lost"
    m.apply(synth.telemetry("n"))  # it came back by itself
    assert m.nodes["n"].connection == "live"


def test_rates_and_histories_per_tick():
    clock = [0.0]
    m = FleetModel(Limits(history=4), clock=lambda: clock[0])
    m.tick()
    for seq in range(10):
        m.apply(synth.commit("n", seq))
    m.apply(synth.verdict("n", 1))
    m.apply(synth.verdict("n", 2, "mismatch", "dtype", "bfloat16"))
    clock[0] = 2.0
    m.tick()
    row = m.nodes["n"]
    assert row.commits_per_s == 5.0
    assert list(row.mismatch_hist) == [0.5]
    for _ in range(10):
        clock[0] += 1
        m.tick()
    assert len(row.util_hist) == 4  # bounded
    # The mismatch rate is over the node's last verdicts (those that decide its health), not
    # over one tick's: two good verdicts after one bad of two make it 1 in 4, not 0.
    m.apply(synth.verdict("n", 3))
    m.apply(synth.verdict("n", 4))
    m.tick()
    assert list(row.mismatch_hist)[-1] == 0.25


def test_buffers_are_bounded_and_dedupe_clone_overlap():
    m = FleetModel(Limits(max_verdicts=50, max_alerts=5, max_nodes=3))
    for i in range(200):
        m.apply(synth.verdict(f"n{i % 3}", i))
    assert len(m.verdicts) == 50 and m.verdicts_total == 200
    m.apply(synth.telemetry("extra"))
    assert "extra" not in m.nodes and m.dropped_nodes == 1
    for i in range(10):
        m.apply(synth.alert(f"n{i}", n=i))  # ten groups (node, kind): five kept
    assert len(m.alerts) == 5 and m.alerts_total == 10
    # A snapshot that repeats a verdict already received live adds nothing.
    v = m.verdicts[-1].verdict
    total = m.verdicts_total
    m.apply(StateReply(node="replay", t=0.0, verdicts=[v], nodes={"n9": NodeSummary()}))
    assert m.verdicts_total == total


def test_alerts_acknowledge_and_open_count():
    m = FleetModel()
    m.apply(synth.telemetry("n"))
    m.apply(synth.alert("n", "chain_break", 1))
    m.apply(synth.alert("n", "chain_break", 1))  # the same id again (Clone overlap): once
    m.apply(synth.alert("n", "unopened", 2))
    assert m.open_alerts == 2 and m.nodes["n"].open_alerts == 2
    assert m.alerts["chain_break:n"].count == 1
    assert m.acknowledge("chain_break:n") and not m.acknowledge("chain_break:n")
    assert m.open_alerts == 1 and m.nodes["n"].health == "alert"


def test_an_alert_flood_is_one_group_per_node_and_kind():
    """The replay daemon raises one alert per bad verdict, each with its own id: 1,000 nodes
    flagged 60 times each are 1,000 rows (count, first and last seen, latest evidence)."""
    m = FleetModel(Limits(max_alerts=2000))
    for seq in range(60):
        for i in range(1000):
            a = synth.alert(f"node-{i:04d}", "mismatch", seq)
            m.apply(msgspec.structs.replace(a, t=1000.0 + seq, message=f"seq {seq}: mismatch"))
    m.apply(synth.alert("node-0001", "bad_opening", 7))
    assert len(m.alerts) == 1001 and m.alerts_total == 60_001
    g = m.alerts["mismatch:node-0001"]
    assert (g.count, g.first_t, g.last_t) == (60, 1000.0, 1059.0)
    assert g.alert.seq == 59 and g.alert.message == "seq 59: mismatch"  # the latest evidence
    assert m.open_alerts == 1001
    # Acknowledged, then it happens again: open again, the count goes on.
    assert m.acknowledge("mismatch:node-0001") and m.open_alerts == 1000
    m.apply(synth.alert("node-0001", "mismatch", 60))
    assert not g.acked and g.count == 61 and m.open_alerts == 1001
    # An older alert arriving late (a snapshot) counts, but is not the latest evidence.
    m.apply(msgspec.structs.replace(synth.alert("node-0002", "mismatch", -5), t=10.0))
    g2 = m.alerts["mismatch:node-0002"]
    assert g2.count == 61 and g2.first_t == 10.0 and g2.alert.seq == 59
    out = m.to_json()["alerts"]
    assert len(out) == 1001 and {"count", "first_t", "last_t", "acked"} <= set(out[0])


def test_state_reply_seeds_a_late_joiner():
    v = synth.verdict("a", 3, "mismatch", "dtype", "bfloat16")
    reply = StateReply(
        node="replay",
        t=0.0,
        nodes={"a": NodeSummary(commits=12, chain_head_seq=11, declared=synth.DECLARED)},
        verdicts=[v],
        alerts=[synth.alert("a")],
    )
    m = FleetModel()
    m.apply(roundtrip(reply))
    row = m.nodes["a"]
    assert row.commits == 12 and row.last_seq == 11
    assert row.health == "flagged" and m.open_alerts == 1


def test_a_state_reply_with_one_bad_verdict_is_refused_whole():
    """Bounds are checked once, at decode: a snapshot carrying a malformed verdict never
    reaches the model (the feed counts it as a rejected frame)."""
    good = synth.verdict("a", 3).to_map()
    bad = {**good, "status": "fine"}
    frames = [b"state", msgpack.packb({"v": 1, "node": "r", "t": 0.0, "verdicts": [good, bad]})]
    with pytest.raises(WireError) as e:
        decode(frames)
    assert e.value.reason == "schema" and "status" in e.value.detail


def test_health_follows_the_last_verdicts_as_they_roll_over():
    """`recent_bad` is kept as verdicts come and go (health and the mismatch rate read it
    for 1,000 nodes every repaint): it always equals the bad ones among the last `recent`."""
    m = FleetModel(Limits(recent=5))
    statuses = ["mismatch", "match", "bad_opening"] + ["match"] * 6 + ["unopened", "match"]
    for seq, status in enumerate(statuses):
        m.apply(synth.verdict("n", seq, status, "dtype", "bfloat16"))
        row = m.nodes["n"]
        assert row.recent_bad == sum(s in BAD_STATUSES for s in row.recent)
        if seq == 7:  # the last five are all matches: clean again
            assert row.health == "ok"
    assert m.nodes["n"].health == "flagged"  # the unopened one is among the last five


def test_a_history_keeps_its_last_points_in_one_fixed_block():
    from fpmon.monitor.model import History

    h = History(3)
    assert list(h) == [] and len(h) == 0
    h.append(1.5)
    assert list(h) == [1.5] and h[-1] == 1.5
    size = h._a.buffer_info()[1]
    for x in range(5):
        h.append(float(x))
    assert list(h) == [2.0, 3.0, 4.0] and len(h) == 3 and h[-1] == 4.0
    assert h._a.buffer_info()[1] == size == 3  # allocated once, never grows


def test_a_tick_right_after_a_burst_is_no_rate():
    # `fpmon snapshot` ticks microseconds after a state reply brought every node's count.
    clock = [100.0]
    m = FleetModel(Limits(), clock=lambda: clock[0])
    for seq in range(33):
        m.apply(synth.commit("n", seq))
    clock[0] += 1e-5
    m.tick()
    assert m.nodes["n"].commits_per_s == 0.0


def test_a_ring_keeps_its_last_items_in_one_fixed_list():
    from fpmon.monitor.history import Ring

    r = Ring(3)
    assert list(r) == [] and len(r) == 0 and not r and r.maxlen == 3
    with pytest.raises(IndexError):
        r[0]
    r.append("a")
    assert list(r) == ["a"] and r[0] == r[-1] == "a" and r
    block = r._a
    for x in "bcde":
        r.append(x)
    assert list(r) == ["c", "d", "e"] and len(r) == 3
    assert (r[0], r[1], r[2], r[-1], r[-3]) == ("c", "d", "e", "e", "c")
    with pytest.raises(IndexError):
        r[3]
    assert r._a is block and len(block) == 3  # allocated once, never grows


def test_model_memory_is_taken_when_a_node_appears_not_as_its_buffers_fill():
    """50 nodes, 150 simulated seconds of telemetry and verdicts (2 a second each): every
    per-node buffer (sparklines, recent verdicts, rate window) is taken when the node appears,
    so live memory stays flat once the rate window's (time, count) pairs, replaced tick by
    tick, are RATE_WINDOW deep. The fleet-wide feeds are kept small here so they too are full
    by then. (A collections.deque grows a second 64-slot block per node once ~33 items have
    gone through it: ~1 KiB a node with two of them, 78 KB here.)"""
    import gc
    import tracemalloc

    nodes = [f"n{i:02d}" for i in range(50)]
    tele = {n: synth.telemetry(n, gpus=2, util=50.0) for n in nodes}
    m = FleetModel(Limits(max_verdicts=20, history=120, recent=20), clock=lambda: 0.0)
    seq = 0

    def second(t: int) -> None:
        nonlocal seq
        for n in nodes:
            m.apply(tele[n], now=float(t))
            for _ in range(2):
                status = "mismatch" if seq % 50 == 0 else "match"
                m.apply(synth.verdict(n, seq, status, "dtype", "bfloat16"), now=t + 0.5)
                seq += 1
        m.tick(now=t + 1.0)
        m.take_dirty()

    warm = RATE_WINDOW + 1
    for t in range(warm):
        second(t)
    gc.collect()
    tracemalloc.start()
    try:
        second(warm)
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        for t in range(warm + 1, 150):
            second(t)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    # Verdict counts past 256 are int objects (CPython caches smaller ones): a few per node.
    assert grown < 100 * len(nodes), f"model grew {grown} B as its buffers filled"
