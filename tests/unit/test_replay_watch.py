"""The intake's watch: floods nobody can be named for, spoofing, and clocks far ahead."""

from __future__ import annotations

import os
import time

from fpmon.chain import GENESIS, next_chain
from fpmon.replay.config import LimitsConfig, ReplayConfig
from fpmon.replay.intake import MAX_CLOCK_AHEAD_S, Intake
from fpmon.replay.sampling import Sampler
from fpmon.replay.timing import TimingModel
from fpmon.replay.watch import Watch
from fpmon.wire import Commit, Limits, encode


def setup() -> tuple[Intake, Watch]:
    intake = Intake({"n1": os.urandom(32)}, Sampler(os.urandom(32), 1.0, 1.0), Limits())
    cfg = ReplayConfig(limits=LimitsConfig(flood_rejects_per_min=60))
    return intake, Watch(cfg, intake, TimingModel(0.5, 5, 0.25))


def commit(**kw: object) -> Commit:
    base = dict(
        node="n1",
        t=time.time(),
        seq=0,
        request_id="r",
        record_digest=b"d" * 32,
        chain=next_chain(GENESIS, b"d" * 32),
        setup={},
        model="tiny",
        prompt_tokens=1,
        output_tokens=1,
    )
    return Commit(**{**base, **kw})  # type: ignore[arg-type]  # fmt: skip


def test_garbage_no_node_can_be_named_for_is_a_flood_alert() -> None:
    intake, watch = setup()
    watch.check(1000.0)
    for _ in range(500):
        intake.handle([b"commit", b"\xc1"], None)  # through the hub: nobody to name
        intake.handle(encode(commit(node="stranger")), None)
    flood = [r for r in watch.check(1001.0) if r.kind == "flood"]
    assert len(flood) == 1 and flood[0].node == "(unattributed)"
    assert flood[0].details["rejects"] == {"malformed": 500, "unknown_node": 500}
    assert not [r for r in watch.check(1002.0) if r.kind == "flood"]  # quiet again


def test_a_commit_dated_in_the_future_is_refused() -> None:
    intake, _ = setup()
    intake.handle(encode(commit(t=time.time() + MAX_CLOCK_AHEAD_S + 60)), None)
    assert intake.stats["n1"].rejects["future_time"] == 1 and intake.stats["n1"].commits == 0
    intake.handle(encode(commit()), None)
    assert intake.stats["n1"].commits == 1


def test_spoofing_is_raised_once_per_burst_naming_the_target() -> None:
    intake, watch = setup()
    intake.handle(encode(commit()), None)
    watch.check(1000.0)
    intake.handle(encode(commit(chain=b"x" * 32)), None)  # contradicts what n1 committed
    raised = [r for r in watch.check(1001.0) if r.kind == "spoofed"]
    assert len(raised) == 1 and raised[0].node == "n1" and "target" in raised[0].message
    assert not [r for r in watch.check(1002.0) if r.kind == "spoofed"]


def test_a_node_that_goes_silent_is_not_flagged_unsigned() -> None:
    """Down, paused or partitioned: it signs nothing because it says nothing. Its commits stay
    uncovered, but that is no finding; a live node that will not sign is."""
    intake, watch = setup()
    watch.cfg = ReplayConfig(limits=LimitsConfig(head_timeout_s=10.0))
    intake.handle(encode(commit()), None)  # seq 0, no head ever
    st = intake.stats["n1"]
    st.last_msg_t -= 60  # and then nothing for a minute (SIGSTOP, a crash, a cut cable)
    assert watch.unsigned(1000.0) + watch.unsigned(1030.0) == []
    st.last_msg_t = time.monotonic()  # talking again, still not signing
    watch.unsigned(2000.0)
    raised = watch.unsigned(2011.0)
    assert [r.kind for r in raised] == ["unsigned"] and raised[0].severity == "warning"
