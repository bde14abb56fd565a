"""Secret sampling: keyed, reproducible, close to the configured rate, higher under suspicion."""

from __future__ import annotations

from fpmon.replay.sampling import Sampler


def test_rate_is_honoured_and_keyed() -> None:
    a = Sampler(b"k" * 32, 0.1, 0.5)
    b = Sampler(b"j" * 32, 0.1, 0.5)
    picks_a = {s for s in range(20_000) if a.sampled("n1", s)}
    picks_b = {s for s in range(20_000) if b.sampled("n1", s)}
    assert 1800 < len(picks_a) < 2200
    assert len(picks_a & picks_b) < 400  # another key, another sample (~10% overlap by chance)
    assert picks_a == {s for s in range(20_000) if Sampler(b"k" * 32, 0.1, 0.5).sampled("n1", s)}
    assert {s for s in range(2000) if a.sampled("n2", s)} != {s for s in picks_a if s < 2000}


def test_suspect_nodes_are_sampled_more() -> None:
    s = Sampler(b"k" * 32, 0.05, 0.6, suspect_window_s=100)
    s.suspect("n1", now=1000.0)
    assert s.rate_for("n1", now=1050.0) == 0.6
    assert s.rate_for("n1", now=1101.0) == 0.05
    assert s.rate_for("n2", now=1050.0) == 0.05
    hits = sum(s.sampled("n1", q, now=1050.0) for q in range(5000))
    assert 2700 < hits < 3300
