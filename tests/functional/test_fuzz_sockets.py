"""The socket fuzz, small (bench/fuzz_sockets.py runs 10^6 frames): mutated and hostile frames
at the hub's XSUB and XPUB, the daemon's SUB input and state ROUTER, an agent's intake and
openings ROUTERs, and raw TCP; after each target every process is alive and answers.

Real processes on loopback (fpmon/testing/drills/fuzz.py); the frames are seeded, so a failure
reproduces with `python bench/fuzz_sockets.py --frames 20000 --seed 3`.
"""

from __future__ import annotations

import os

import pytest

from fpmon.testing.drills.fuzz import TARGETS, FuzzParams, TargetResult, isolated, run


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_20k_hostile_frames_leave_every_process_alive_and_answering(tmp_path):
    r = run(FuzzParams(frames=20_000, seed=3, workdir=tmp_path))
    assert [t.name for t in r.targets] == list(TARGETS)
    assert not r.failures, "\n".join(r.failures)
    for t in r.targets:
        assert t.sent == r.params.count(t.name) and not t.stuck, (t.name, t.stuck)
    counted = {t.name: sum(v for k, v in t.counted.items() if ":" in k) for t in r.targets}
    for name in ("daemon-sub", "daemon-state", "agent-intake", "agent-openings"):
        assert counted[name] > 0, f"{name}: no reject counted: the frames never arrived"


def _aborts_once(count: int, attempt: int, progress) -> TargetResult:
    if attempt == 0:
        progress.value = 7
        os.write(2, b"Assertion failed: !_more (src/fq.cpp:80)\n")
        os.abort()
    return TargetResult("t", "tcp://x:1", sent=count)


def test_a_fuzzer_client_that_aborts_in_libzmq_is_replaced_and_counted(tmp_path):
    r = isolated("t", 100, _aborts_once, tmp_path)
    assert r.sent == 100
    assert r.fuzzer_aborts == ["Assertion failed: !_more (src/fq.cpp:80) after 7 frames"]
