"""The challenge schedule: a keyed PRF over (node, epoch, k) -> send times, prompts, budgets."""

from __future__ import annotations

import statistics

import pytest

from fpmon.replay.challenge_schedule import WORDS, ChallengeSchedule
from fpmon.replay.sampling import Sampler

KEY = bytes(range(32))


def test_same_key_and_epoch_give_the_same_schedule_an_auditor_can_rederive() -> None:
    a = ChallengeSchedule(KEY, 300.0, epoch=1_700_000_000)
    b = ChallengeSchedule(KEY, 300.0, epoch=1_700_000_000)
    assert a.offsets("n1", 50) == b.offsets("n1", 50)
    assert [a.prompt("n1", k, ()) for k in range(20)] == [b.prompt("n1", k, ()) for k in range(20)]


def test_without_the_key_the_times_are_not_the_schedule() -> None:
    """Another key (one bit off), another epoch (a restart) or another node: other times, and
    no interval of the real schedule is reproduced."""
    real = ChallengeSchedule(KEY, 300.0, epoch=1).offsets("n1", 200)
    guesses = [
        ChallengeSchedule(bytes([KEY[0] ^ 1]) + KEY[1:], 300.0, epoch=1).offsets("n1", 200),
        ChallengeSchedule(KEY, 300.0, epoch=2).offsets("n1", 200),
        ChallengeSchedule(KEY, 300.0, epoch=1).offsets("n2", 200),
    ]
    for g in guesses:
        assert not set(real) & set(g)
        # independent draws: the guess is off by about as much as two random times are
        assert statistics.median(abs(x - y) for x, y in zip(real, g, strict=True)) > 30.0


def test_the_draws_are_domain_separated_from_the_sampling_prf() -> None:
    sch, smp = ChallengeSchedule(KEY, 1.0, epoch=0), Sampler(KEY, 0.05, 0.5)
    assert all(sch.uniform("time", "n1", k) != smp.score("n1", k) for k in range(100))


def test_intervals_are_exponential_at_the_configured_mean() -> None:
    """A Poisson process: mean as configured, standard deviation equal to it (memoryless: the
    time since the last challenge tells nothing), and consecutive intervals uncorrelated."""
    sch = ChallengeSchedule(KEY, 300.0, epoch=42)
    iv = [sch.interval("n1", k) for k in range(4000)]
    mean, sd = statistics.fmean(iv), statistics.pstdev(iv)
    assert 300 * 0.92 < mean < 300 * 1.08  # the mean of 4000 has a 1.6% standard error
    assert 0.9 < sd / mean < 1.1
    assert abs(statistics.correlation(iv[:-1], iv[1:])) < 0.08
    assert min(iv) > 0
    offsets = sch.offsets("n1", 4000)
    assert offsets == sorted(offsets) and offsets[0] == iv[0]


def test_prompts_come_from_the_pool_or_are_seeded_words() -> None:
    sch = ChallengeSchedule(KEY, 1.0, epoch=0)
    pool = ("alpha", "beta", "gamma", "delta")
    picked = [sch.prompt("n1", k, pool) for k in range(400)]
    assert set(picked) == set(pool)  # every entry reachable, nothing else
    words = [sch.prompt("n1", k, ()) for k in range(200)]
    assert all(4 <= len(w.split()) <= 24 and set(w.split()) <= set(WORDS) for w in words)
    assert len(set(words)) == 200
    budgets = [sch.max_tokens("n1", k, (8, 16, 32)) for k in range(300)]
    assert set(budgets) == {8, 16, 32}


@pytest.mark.parametrize("key, mean", [(b"short", 1.0), (KEY, 0.0)])
def test_bad_settings_are_refused(key: bytes, mean: float) -> None:
    with pytest.raises(ValueError):
        ChallengeSchedule(key, mean, epoch=0)
