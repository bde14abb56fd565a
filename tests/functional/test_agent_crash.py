"""kill -9 a real agent mid-stream, restart it: nothing acknowledged is lost, no gap, no fork."""

from __future__ import annotations

import hashlib
import threading
import time

from fpmon.agents.client import submit
from fpmon.agents.store import RecordLog
from fpmon.errors import FpmonError
from fpmon.testing.raw import ONE_THREAD, RawSubscriber, check_chain, raw_open
from fpmon.testing.spawn import AgentProcess, write_config


def test_kill9_mid_stream_then_restart(tmp_path):
    cfg = write_config(
        tmp_path, "crash-node", engine=ONE_THREAD, batching={"max_batch": 2, "max_wait_ms": 5}
    )
    first = AgentProcess(cfg).start()
    sub = RawSubscriber(first.endpoints["publish"])
    sub.pump(lambda s: s["telemetry"])
    acked: dict[int, str] = {}
    stop = threading.Event()

    def client(k: int) -> None:
        i = 0
        while not stop.is_set():
            try:
                r = submit(first.endpoints["intake"], f"client {k} request {i}", 3, 5)
            except FpmonError:
                return  # the agent is gone
            if r.status == "ok":
                acked[r.seq] = r.request_id
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 60
    while len(acked) < 6 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.kill()  # SIGKILL while requests are in flight
    stop.set()
    for t in threads:
        t.join()
    sub.pump(lambda s: True, timeout_s=1)
    assert len(acked) >= 6

    log = RecordLog(cfg.parent / "state" / "records.sqlite", node="crash-node", readonly=True)
    st = log.stats()
    assert log.verify_chain() == -1
    log.close()
    assert max(acked) <= st.head_seq, "an acknowledged record is not in the log"
    assert st.records == st.head_seq + 1  # gapless from 0

    second = AgentProcess(cfg).start()
    try:
        seen = {c["seq"]: c for c in sub.seen["commit"]}
        for seq, rid in acked.items():
            o = raw_open(second.endpoints["openings"], seq)
            assert o["status"] == "ok", (seq, o)
            digest = hashlib.sha256(o["record"]).digest()
            if seq in seen:  # every acknowledged record was published before its reply
                assert seen[seq]["record_digest"] == digest and seen[seq]["request_id"] == rid
        sub.close()
        sub = RawSubscriber(second.endpoints["publish"])
        sub.pump(lambda s: s["telemetry"])
        r = submit(second.endpoints["intake"], "after the crash", 3, 60)
        assert r.status == "ok" and r.seq == st.head_seq + 1
        sub.pump(lambda s: s["commit"] and any(h["seq"] == r.seq for h in s["head"]))
        # The restart may also republish its logged tail (test_agent_faults checks that).
        new = [c for c in sub.seen["commit"] if c["seq"] > st.head_seq]
        check_chain(new, prev=st.head_chain, first=st.head_seq + 1)
    finally:
        sub.close()
        assert second.stop() == 0
