"""The durable record log on real SQLite: gapless chain, resume, retention, disk full."""

from __future__ import annotations

import hashlib
import os

import pytest

from fpmon.agents.store import RecordLog, StoreError
from fpmon.chain import GENESIS


def _items(n: int, size: int = 100, start: int = 0) -> list[tuple[str, bytes, bytes, int]]:
    out = []
    for i in range(start, start + n):
        data = bytes([i % 251]) * size
        out.append((f"r{i}", hashlib.sha256(data).digest(), data, 4))
    return out


def test_append_is_gapless_and_chained(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n")
    a = log.append(_items(3)) + log.append(_items(2, start=3))
    assert [x.seq for x in a] == [0, 1, 2, 3, 4]
    chain = GENESIS
    for x in a:
        chain = hashlib.sha256(chain + x.digest).digest()
        assert x.chain == chain
    assert log.verify_chain() == -1
    status, data = log.get(2)
    assert status == "ok" and hashlib.sha256(data).digest() == a[2].digest


def test_reopen_resumes_chain_without_fork(tmp_path):
    path = tmp_path / "r.sqlite"
    log = RecordLog(path, node="n")
    last = log.append(_items(4))[-1]
    log.close()
    again = RecordLog(path, node="n")
    assert (again.head_seq, again.head_chain) == (3, last.chain)
    nxt = again.append(_items(1, start=4))[0]
    assert nxt.seq == 4
    assert nxt.chain == hashlib.sha256(last.chain + nxt.digest).digest()
    assert again.verify_chain() == -1


def test_log_of_another_node_is_refused(tmp_path):
    RecordLog(tmp_path / "r.sqlite", node="a").close()
    with pytest.raises(StoreError, match="node 'a'"):
        RecordLog(tmp_path / "r.sqlite", node="b")


def test_retention_by_size_and_age_answers_purged(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n")
    log.append(_items(10, size=1000))
    assert log.enforce_retention(max_bytes=4000, max_age_s=1e9) == 6
    assert log.get(5)[0] == "purged"
    assert log.get(6)[0] == "ok"
    assert log.get(10)[0] == "unknown"
    # Age: everything is older than -1 s from now.
    assert log.enforce_retention(max_bytes=1 << 30, max_age_s=-1) == 4
    st = log.stats()
    assert (st.records, st.stored, st.head_seq) == (10, 0, 9)
    # The chain still resumes after purging bodies.
    assert log.append(_items(1, start=10))[0].seq == 10
    assert log.verify_chain() == -1


def test_full_log_raises_store_error_and_keeps_head(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n", hard_max_bytes=64 * 1024)
    log.append(_items(1, size=1000))
    with pytest.raises(StoreError, match="full"):
        for i in range(1, 200):
            log.append(_items(1, size=8000, start=i))
    head = log.head_seq
    # Nothing half-written: the failed transaction rolled back, head and chain still agree.
    assert log.verify_chain() == -1
    assert log.stats().head_seq == head


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_log_raises_store_error(tmp_path):
    path = tmp_path / "r.sqlite"
    RecordLog(path, node="n").close()
    os.chmod(tmp_path, 0o500)
    try:
        with pytest.raises(StoreError):
            RecordLog(path, node="n").append(_items(1))
    finally:
        os.chmod(tmp_path, 0o700)


def test_rows_near_the_top_of_int64_are_empty_not_an_overflow(tmp_path) -> None:
    """A links? request for the last positions of the seq range: first + count passes 2^63,
    which SQLite cannot hold (the socket fuzz killed an agent with it)."""
    from fpmon.agents.store import MAX_SEQ, RecordLog

    log = RecordLog(tmp_path / "r.sqlite", node="n")
    assert log.rows(MAX_SEQ, 1024) == [] and log.rows(MAX_SEQ - 5, 1024) == []
