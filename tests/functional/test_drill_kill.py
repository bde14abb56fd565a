"""The kill drill, small (bench/drill_kill.py runs it at 40+): random SIGKILLs of the hub, an
agent and the replay daemon under load, each restarted; then the fleet's invariants hold.

Real processes on loopback (fpmon/testing/drills/kill.py): nothing acknowledged lost, logs gapless
with chains that recompute, no fork anywhere, at most one verdict per (node, seq), no
chain_break on these honest agents, every restart recovered.
"""

from __future__ import annotations

import pytest

from fpmon.testing.drills.kill import INVARIANTS, DrillParams, run

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_six_kills_under_load_keep_every_invariant(tmp_path):
    r = run(DrillParams(kills=6, agents=2, seed=7, between_s=(0.3, 1.5), workdir=tmp_path))
    assert len(r.events) == 6
    assert {e.kind for e in r.events} == {"hub", "agent", "replay"}  # each at least once
    assert r.load["acked"] > 0 and all(x["records"] > 0 for x in r.logs.values())
    bad = {k: r.violations[k] for k in INVARIANTS if r.violations[k]}
    assert not bad, "\n".join(f"{k}: {len(v)}: {v[:10]}" for k, v in bad.items())
    rec = r.recovery()
    assert rec.get("agent") and rec.get("hub") and rec.get("replay_state")
