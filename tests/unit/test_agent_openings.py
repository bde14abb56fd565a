"""Openings answer from the real log: exact bytes, or `purged` / `unknown` with a reason."""

from __future__ import annotations

import hashlib
import time

from fpmon.agents.openings import answer
from fpmon.agents.store import RecordLog
from fpmon.wire import OpenRequest


def test_ok_purged_unknown(tmp_path):
    log = RecordLog(tmp_path / "r.sqlite", node="n")
    datas = [bytes([i]) * 500 for i in range(3)]
    log.append([(f"r{i}", hashlib.sha256(d).digest(), d, 4) for i, d in enumerate(datas)])
    log.enforce_retention(max_bytes=1000, max_age_s=1e9)  # purges seq 0

    def ask(seq: int):
        req = OpenRequest(node="verifier", t=time.time(), seq=seq, nonce=b"x")
        return answer(log, req, "n")

    ok = ask(2)
    assert (ok.status, ok.record, ok.nonce) == ("ok", datas[2], b"x")
    assert ask(0).status == "purged" and ask(0).record is None and "retention" in ask(0).reason
    assert ask(7).status == "unknown" and "head is 2" in ask(7).reason
