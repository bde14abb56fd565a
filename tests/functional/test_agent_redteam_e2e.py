"""A red-team agent process, end to end: what the demo's cheats leave for a verifier to find."""

from __future__ import annotations

import dataclasses
import hashlib

from fpmon.agents.client import submit
from fpmon.records import Record
from fpmon.reproduce import replay_record
from fpmon.testing.raw import RawSubscriber, head_ok, raw_open
from fpmon.testing.spawn import AgentProcess, write_config


def test_batch_cheat_tamper_and_drop(tmp_path, tiny_engine):
    cfg = write_config(
        tmp_path,
        "cheat-node",
        engine={"dtype": "float32"},
        publish={"head_every_s": 0.3},
        redteam={"enabled": True, "actual_batch": 4, "tamper_openings": True, "drop_every": 2},
    )
    with AgentProcess(cfg) as a:
        log = a.log_path.read_text()
        assert '"level": "WARNING"' in log and "RED-TEAM MODE" in log
        sub = RawSubscriber(a.endpoints["publish"])
        sub.pump(lambda s: s["telemetry"])
        replies = [submit(a.endpoints["intake"], f"cheat {i}", 4, 60) for i in range(2)]
        assert [r.seq for r in replies] == [0, 1]
        sub.pump(lambda s: any(h["seq"] == 1 for h in s["head"]))
        sub.close()
        # The second commitment was dropped, but the signed head covers it: a visible hole.
        assert [c["seq"] for c in sub.seen["commit"]] == [0]
        assert head_ok(next(h for h in sub.seen["head"] if h["seq"] == 1))
        commit = sub.seen["commit"][0]
        assert commit["setup"]["batch_size"] == 1  # declared
        opened = raw_open(a.endpoints["openings"], 0)
    assert opened["status"] == "ok"
    assert hashlib.sha256(opened["record"]).digest() != commit["record_digest"]  # tampered

    # Undo the one flipped bit (the cheat flips the first probe's first byte) to get what was
    # committed, then replay it: the declared batch 1 does not reproduce it, batch 4 does.
    rec = Record.decode(opened["record"])
    name = sorted(rec.probes)[0]
    b = rec.probes[name]
    fixed = dataclasses.replace(b, data=bytes([b.data[0] ^ 1]) + b.data[1:])
    rec = dataclasses.replace(rec, probes={**rec.probes, name: fixed})
    assert rec.digest() == commit["record_digest"]
    assert (rec.setup.batch_size, rec.setup.dtype) == (1, "float32")
    engine = tiny_engine("float32", "sdpa")
    last = f"keys.L{rec.layers[-1]}"
    declared = replay_record(engine, rec)
    actual = replay_record(engine, rec, batch_size=4, slot=0)
    assert actual.probes[last] == rec.probes[last]
    assert declared.probes[last] != rec.probes[last]


def test_side_work_is_real_cpu_time_in_the_engine_process_and_records_stay_honest(
    tmp_path, tiny_engine
):
    cfg = write_config(
        tmp_path,
        "busy-node",
        engine={"dtype": "float32"},
        redteam={"enabled": True, "side_work_duty": 0.5},
    )
    with AgentProcess(cfg) as a:
        log = a.log_path.read_text()
        assert "runs hidden compute work in its engine process at 50% duty" in log
        sub = RawSubscriber(a.endpoints["publish"])
        reply = submit(a.endpoints["intake"], "busy beside the declared work", 4, 60)

        def after_commit(seen) -> list[tuple[float, float]]:
            """(t, engine CPU-seconds) of the samples taken after the request was served."""
            if not seen["commit"]:
                return []
            served = seen["commit"][0]["t"]
            return [(x["t"], x["engine"]["cpu_s"]) for x in seen["telemetry"] if x["t"] > served]

        sub.pump(lambda s: len(after_commit(s)) >= 5)
        sub.close()
        commit = sub.seen["commit"][0]
        opened = raw_open(a.endpoints["openings"], reply.seq)
    # The side work is real: an idle agent spends 0.007 of a core (docs/REPLAY.md); this one,
    # serving nothing after its one request, several times that on matmuls.
    (t0, c0), *_, (t1, c1) = after_commit(sub.seen)
    assert (c1 - c0) / (t1 - t0) > 0.05
    # ... and invisible in its records: the declared setup reproduces them bit for bit.
    assert opened["status"] == "ok"
    rec = Record.decode(opened["record"])
    assert rec.digest() == commit["record_digest"]
    last = f"keys.L{rec.layers[-1]}"
    assert replay_record(tiny_engine("float32", "sdpa"), rec).probes[last] == rec.probes[last]
