"""Ordinary faults on a real agent process: a damaged disk, a full state directory, hostile
seqs, a crash between logging and publishing. The honest operator must never look guilty.
"""

from __future__ import annotations

import hashlib
import json
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest

from fpmon import canonical
from fpmon.agents.client import submit
from fpmon.agents.store import RecordLog
from fpmon.testing.raw import ONE_THREAD, RawSubscriber, check_chain, head_ok, raw_open
from fpmon.testing.spawn import AgentProcess, write_config


def _fpmon(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fpmon", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def _wait(what: str, cond: Any, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (got := cond()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return got


def _checkpoint(db: Path) -> None:
    """Fold the WAL into the main file, so a flipped byte there is what every reader sees."""
    c = sqlite3.connect(db)
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults")
    cfg = write_config(d, "fault-node", engine=ONE_THREAD)
    with AgentProcess(cfg) as a:
        yield a


def test_damaged_pages_refuse_start_and_stats_with_one_line(tmp_path, smash_middle_page):
    cfg = write_config(tmp_path, "disk-node", engine=ONE_THREAD)
    db = tmp_path / "state" / "records.sqlite"
    log = RecordLog(db, node="disk-node")
    body = b"x" * 1000
    log.append([(f"r{i}", hashlib.sha256(body).digest(), body, 4) for i in range(2000)])
    log.close()
    smash_middle_page(db)
    for args in (["agent", "stats", "--config", str(cfg)], ["agent", "--config", str(cfg)]):
        p = _fpmon(*args, timeout_s=60)
        assert p.returncode != 0, (args, p.stderr[-2000:])
        assert "Traceback" not in p.stderr, p.stderr[-2000:]
        last = p.stderr.strip().splitlines()[-1]
        assert last.startswith("fpmon: error:") and str(db) in last and "backup" in last, last


def test_out_of_range_seq_is_refused_at_the_boundary_and_the_agent_lives(agent):
    ep = agent.endpoints["openings"]
    for seq in (2**63, 2**64 - 1, -1):
        o = raw_open(ep, seq)
        assert o is not None and o["status"] == "error", (seq, o)
        assert o["reason"].startswith("schema") and "seq" in o["reason"], o
    r = submit(agent.endpoints["intake"], "still alive?", 2, 60)
    assert r.status == "ok" and raw_open(ep, r.seq)["status"] == "ok"


def test_body_corrupted_at_rest_is_answered_error_and_counted(tmp_path, flip_at_rest):
    cfg = write_config(tmp_path, "rot-node", engine=ONE_THREAD)
    with AgentProcess(cfg) as a:
        seqs = [submit(a.endpoints["intake"], f"rot {i}", 3, 60).seq for i in range(3)]
    db = tmp_path / "state" / "records.sqlite"
    log = RecordLog(db, node="rot-node", readonly=True)
    data = log.get(seqs[1])[1]
    log.close()
    _checkpoint(db)
    flip_at_rest(db, data[len(data) // 2 : len(data) // 2 + 64])
    with AgentProcess(cfg) as a:  # the structure and chain are intact: it starts
        ep = a.endpoints["openings"]
        bad = raw_open(ep, seqs[1])
        assert bad["status"] == "error" and bad["record"] is None
        assert "record body corrupted at rest (digest mismatch)" in bad["reason"]
        assert raw_open(ep, seqs[0])["status"] == "ok"
        faults = _wait("counted fault", lambda: a.read_status()["faults"]["openings"])
        assert faults == {"corrupt_body": 1}
        assert "digest mismatch" in a.log_tail(20000)


def test_status_write_failure_is_logged_once_and_stale_status_is_flagged(agent):
    tmp = agent.state_dir / "status.json.tmp"
    tmp.mkdir()  # the rename source cannot be written: what a full disk looks like here
    try:
        msg = "cannot write status file"
        _wait("failure logged", lambda: msg in agent.log_tail(100000))
        p = _wait(
            "stats to flag the stale status",
            lambda: (
                (
                    p := _fpmon("agent", "stats", "--config", str(agent.config), timeout_s=60)
                ).stdout.count("STALE")
                and p
            ),
        )
        assert p.returncode == 0, p.stderr
        line = next(x for x in p.stdout.splitlines() if "STALE" in x)
        assert "s old" in line and "status file" in line, line
        j = json.loads(_fpmon("agent", "stats", "--json", "--config", str(agent.config)).stdout)
        assert j["status_stale"] is True and j["status_age_s"] > 3
        assert agent.log_tail(100000).count(msg) == 1  # once per change of state, not a flood
    finally:
        tmp.rmdir()
    s = _wait("status written again", lambda: agent.read_status()["faults"].get("status"))
    assert s["write_failed"] >= 3
    assert agent.log_tail(100000).count("status file written again") == 1
    assert time.time() - agent.read_status()["updated_at"] < 5


def _append_unpublished(db: Path, node: str, n: int) -> list[tuple[int, bytes]]:
    """Log `n` more records as an agent killed before publishing them would have left them."""
    log = RecordLog(db, node=node)
    template = msgpack.unpackb(log.get(log.head_seq)[1], raw=False)
    items = []
    for i in range(n):
        m = {**template, "seq": log.next_seq + i, "request_id": f"unpublished-{i}"}
        data = canonical.pack(m)
        items.append((m["request_id"], canonical.digest(data), data, len(m["output_ids"])))
    out = [(a.seq, a.digest) for a in log.append(items)]
    log.close()
    return out


def test_restart_republishes_what_a_crash_left_unpublished(tmp_path):
    port = _free_port()
    cfg = write_config(
        tmp_path,
        "tail-node",
        engine=ONE_THREAD,
        endpoints={"publish": f"tcp://127.0.0.1:{port}"},
        publish={"head_every_s": 3600.0},  # heads only at start, every n, and at a clean stop
    )
    # Connected before either start, as a verifier is: it sees everything both runs publish.
    sub = RawSubscriber(f"tcp://127.0.0.1:{port}")
    try:
        with AgentProcess(cfg) as first:
            sub.pump(lambda s: s["telemetry"])
            acked = [submit(first.endpoints["intake"], f"tail {i}", 3, 60).seq for i in range(2)]
            sub.pump(lambda s: len(s["commit"]) >= 2)
            assert not any(h["seq"] == acked[-1] for h in sub.seen["head"])
        # SIGTERM: the clean stop signs a last head over everything it published.
        sub.pump(lambda s: any(h["seq"] == acked[-1] for h in s["head"]))
        lost = _append_unpublished(tmp_path / "state" / "records.sqlite", "tail-node", 2)

        with AgentProcess(cfg) as second:
            sub.pump(lambda s: any(h["seq"] == lost[-1][0] for h in s["head"]))
            r = submit(second.endpoints["intake"], "after restart", 3, 60)
            sub.pump(lambda s: any(c["seq"] == r.seq for c in s["commit"]))
    finally:
        sub.close()
    seqs = [c["seq"] for c in sub.seen["commit"]]
    # The restart republished exactly what the last signed head did not cover, in order,
    # before anything new; nothing the first run published went out twice.
    assert seqs == [*acked, *(s for s, _ in lost), r.seq]
    by_seq = {c["seq"]: c for c in sub.seen["commit"]}
    assert [by_seq[s]["record_digest"] for s, _ in lost] == [d for _, d in lost]
    assert by_seq[lost[0][0]]["request_id"] == "unpublished-0"
    check_chain(sub.seen["commit"])
    assert all(head_ok(h) for h in sub.seen["head"])
