"""Battery layout: every prompt exactly once per setup, fillers complete shapes, names valid."""

from __future__ import annotations

import pytest

from fpmon.errors import FpmonError
from fpmon.lab.battery import Spec, arrange, battery_specs, parse_experiments
from fpmon.lab.prompts import make_prompts
from fpmon.sidework import Load

PSET = make_prompts(10, 6, 3, vocab_limit=500, seed=3)


def placed(batches):
    return sorted(i for b in batches for _r, i in b.who)


@pytest.mark.parametrize("arrangement", ["grouped", "rotated", "filler"])
def test_each_prompt_once_in_full_batches(arrangement):
    batches = arrange(Spec("x", "batch", batch=4, arrange=arrangement), PSET, 500)
    assert placed(batches) == list(range(10))
    for b in batches:
        assert len(b.rows) == 4 and all(len(r) == 6 for r in b.rows)
        for r, i in b.who:  # the real prompt and its forced continuation sit in its row
            assert b.rows[r] == PSET.prompts[i] and b.forced[r] == PSET.forced[i]
        fillers = [r for r in range(4) if r not in {r for r, _ in b.who}]
        assert all(b.forced[r] is None for r in fillers)


def test_rotation_changes_companions_and_slots():
    def slots(arrangement):
        batches = arrange(Spec("x", "batch", batch=4, arrange=arrangement), PSET, 500)
        return {i: (r, tuple(sorted(j for _, j in b.who))) for b in batches for r, i in b.who}

    grouped, rotated = slots("grouped"), slots("rotated")
    assert sum(grouped[i] != rotated[i] for i in range(10)) >= 8


def test_prompt_set_is_seeded_and_checked():
    again = make_prompts(10, 6, 3, vocab_limit=500, seed=3)
    assert again.digest() == PSET.digest()
    assert make_prompts(10, 6, 3, vocab_limit=500, seed=4).digest() != PSET.digest()
    assert all(len(f) == 4 for f in PSET.forced)  # decode_steps + 1
    with pytest.raises(FpmonError, match="--decode-steps"):
        make_prompts(4, 6, 0, vocab_limit=500)


def test_specs_and_experiment_names():
    names = [s.name for s in battery_specs(["repeat", "composition", "streams"], 8)]
    assert names[:2] == ["base", "base.r2"]
    assert "bs4" in names  # composition needs its reference even without "batch"
    assert "load.c-heavy@decode.bs16.r2" in names and "load.proc-c-heavy" in names
    assert len(names) == len(set(names))
    with pytest.raises(FpmonError, match="unknown experiment 'nope'"):
        parse_experiments("batch,nope")
    assert Load("memory", "heavy", pressure=True).label() == "pressure+m-heavy"


def test_lab_is_a_command_of_fpmon():
    from fpmon.cli import build_parser

    args = build_parser().parse_args(["lab", "run", "--out", "x", "--device", "cuda"])
    assert args.func.__name__ == "run_cmd" and args.device == "cuda"
