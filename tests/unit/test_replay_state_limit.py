"""The state endpoint's rate limit with a fake clock: per peer, in total, and bounded in peers."""

from __future__ import annotations

from fpmon.replay import state
from fpmon.replay.state import RateLimit


def test_each_peer_gets_its_rate_and_all_together_ten_times_it(monkeypatch):
    now = [0.0]
    lim = RateLimit(2.0, 3.0, lambda: now[0])
    assert [lim.allow(b"a") for _ in range(5)] == [True, True, True, False, False]
    now[0] = 0.5  # one more token for `a`
    assert lim.allow(b"a") and not lim.allow(b"a")
    # Fresh peers (new connections without Curve) share the total: a burst of 30 at 20/s,
    # full again at 0.5 s, less the one `a` just took.
    fresh = [lim.allow(bytes([i, j])) for i in range(10) for j in range(10)]
    assert sum(fresh) == 29
    monkeypatch.setattr(state, "MAX_PEERS", 8)
    for i in range(20):
        lim.allow(b"p%d" % i)
    assert len(lim.peers) == 8 and b"p19" in lim.peers and b"a" not in lim.peers
