"""A record log damaged at rest, on real SQLite files: named at start, never served as `ok`.

An honest node with a bad disk must look like a node with a bad disk: the agent refuses to
start on a broken structure or chain, and a body that no longer hashes to its committed
digest is answered `error`, not served.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from pathlib import Path

import pytest

from fpmon.agents.openings import CORRUPT_BODY, answer
from fpmon.agents.store import CorruptLog, RecordLog, StoreError
from fpmon.wire import OpenRequest


def _body(i: int, size: int = 1000) -> bytes:
    # Distinct, findable bytes per record: the tests flip them inside the file itself.
    return (b"BODY%06d|" % i) * (size // 11)


def _fill(path: Path, n: int, size: int = 1000) -> None:
    log = RecordLog(path, node="n")
    items = [
        (f"r{i}", hashlib.sha256(_body(i, size)).digest(), _body(i, size), 4) for i in range(n)
    ]
    log.append(items)
    log.close()  # the last connection checkpoints the WAL into the main file


def _raw(path: Path, sql: str, *args: object) -> None:
    db = sqlite3.connect(path)
    db.execute(sql, args)
    db.commit()
    db.close()


def _open(log: RecordLog, seq: int):
    req = OpenRequest(node="verifier", t=time.time(), seq=seq, nonce=b"x")
    return answer(log, req, "n")


def test_out_of_range_seq_is_unknown_not_a_crash(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n")
    log.append([("r0", hashlib.sha256(b"x").digest(), b"x", 1)])
    for seq in (2**63, 2**64 - 1, 10**30, -1, -(2**63) - 1):
        assert log.get(seq) == ("unknown", None), seq
        assert log.chain_at(seq) is None
        reply = _open(log, seq)
        assert reply.status == "unknown" and reply.record is None


def test_good_log_verifies_and_reports_rows(tmp_path):
    path = tmp_path / "r.sqlite"
    _fill(path, 50)
    report = RecordLog(path, node="n").verify()
    assert report.rows == 50 and report.head_seq == 49 and report.seconds >= 0


def test_body_corrupted_at_rest_is_answered_error_not_ok(tmp_path, flip_at_rest):
    path = tmp_path / "r.sqlite"
    _fill(path, 20)
    flip_at_rest(path, _body(7)[:200])
    log = RecordLog(path, node="n")
    log.verify()  # structure and chain are intact: the agent still starts and serves
    assert log.get(7) == ("corrupt", None)
    assert log.get(6)[0] == "ok" and log.get(8)[0] == "ok"
    reply = _open(log, 7)
    assert reply.status == "error" and reply.record is None
    assert CORRUPT_BODY in reply.reason and "digest mismatch" in reply.reason


@pytest.mark.parametrize(
    ("sql", "args", "where"),
    [
        ("UPDATE records SET chain=? WHERE seq=3", (b"\x01" * 32,), "seq 3"),
        ("UPDATE records SET digest=? WHERE seq=4", (b"\x02" * 32,), "seq 4"),
        ("DELETE FROM records WHERE seq=2", (), "seq 2"),
    ],
    ids=["broken_link", "changed_digest", "gap"],
)
def test_broken_chain_is_refused_naming_the_seq(tmp_path, sql, args, where):
    path = tmp_path / "r.sqlite"
    _fill(path, 10)
    _raw(path, sql, *args)
    with pytest.raises(CorruptLog, match=where) as e:
        RecordLog(path, node="n").verify()
    msg = str(e.value)
    assert str(path) in msg and "\n" not in msg and "backup" in msg


def test_damaged_page_is_refused_naming_the_file(tmp_path, smash_middle_page):
    path = tmp_path / "r.sqlite"
    _fill(path, 2000)
    smash_middle_page(path)
    with pytest.raises(CorruptLog) as e:
        RecordLog(path, node="n").verify()
    assert str(path) in str(e.value) and "backup" in str(e.value)
    # The read-only connection `agent stats` uses fails with the same kind of error.
    with pytest.raises(StoreError, match="damaged"):
        RecordLog(path, node="n", readonly=True).stats()


def test_verify_is_one_pass_over_many_rows(tmp_path):
    path = tmp_path / "r.sqlite"
    log = RecordLog(path, node="n", synchronous="OFF")
    for start in range(0, 20_000, 2_000):
        log.append(
            [
                (f"r{i}", hashlib.sha256(b"%d" % i).digest(), b"%d" % i, 1)
                for i in range(start, start + 2_000)
            ]
        )
    report = log.verify()
    assert report.rows == 20_000
    assert report.seconds < 2.0  # ~0.03 s here; a per-row query would be far slower
