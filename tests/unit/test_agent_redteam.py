"""Red-team behaviours: declared setup, tampered openings, dropped/reordered commits."""

from __future__ import annotations

import functools
import subprocess
import sys
import time

import pytest

from fpmon.agents.config import EngineConfig, RedTeamConfig
from fpmon.agents.parts import HONEST, parts_for
from fpmon.agents.redteam import LyingPublisher, LyingWorker, RedTeam
from fpmon.capture import capture_prompts
from fpmon.engines.base import ProbeSpec
from fpmon.records import Record
from fpmon.wire import Commit


@pytest.fixture
def record(tiny_engine):
    def _record(dtype: str = "float32", attn: str = "eager") -> Record:
        eng = tiny_engine(dtype, attn)
        return capture_prompts(
            eng, ["hi there"], batch_size=2, slot=1, decode_steps=2, probes=ProbeSpec((0, 2))
        )[0]

    return _record


def test_declare_rewrites_setup_schedule_and_probe_dtype(record):
    rt = RedTeam.from_config(
        RedTeamConfig(enabled=True, actual_batch=2, actual_attn="eager", actual_dtype="float32")
    )
    declared = EngineConfig(dtype="bfloat16", attn="sdpa")
    assert rt.actual_engine(declared).dtype == "float32"
    assert rt.actual_engine(declared).attn == "eager"
    honest = record()
    lie = rt.declare(honest, declared)
    assert (lie.setup.dtype, lie.setup.attn_impl) == ("bfloat16", "sdpa")
    assert (lie.setup.batch_size, lie.setup.slot) == (1, 0)
    assert lie.schedule["row_lengths"] == [len(lie.prompt_ids)]
    assert {b.dtype for k, b in lie.probes.items() if k != "logits.topk.ids"} == {"bfloat16"}
    assert lie.output_ids == honest.output_ids
    assert RedTeam().declare(honest, declared) is honest


def test_tamper_gives_a_valid_record_with_another_digest(record):
    data = record("bfloat16", "sdpa").encode()
    bad = RedTeam(enabled=True, tamper_openings=True).tamper(data)
    assert bad != data and len(bad) == len(data)
    Record.decode(bad)  # still decodes: only the digest check can catch it
    assert RedTeam().tamper(data) == data


def _commit(seq: int) -> Commit:
    return Commit(
        node="n",
        t=time.time(),
        seq=seq,
        request_id=str(seq),
        record_digest=b"d",
        chain=b"c",
        setup={},
        model="m",
        prompt_tokens=1,
        output_tokens=1,
    )


def test_drop_and_reorder_commitments():
    drop = RedTeam(enabled=True, drop_every=3)
    out = [c.seq for i in range(7) for c in drop.commits(_commit(i))]
    assert out == [0, 1, 3, 4, 6]
    swap = RedTeam(enabled=True, reorder=True)
    out = [c.seq for i in range(4) for c in swap.commits(_commit(i))]
    assert out == [1, 0, 3, 2]


def test_an_honest_agent_composes_the_plain_parts_and_never_loads_the_red_team():
    code = (
        "import sys\n"
        "from fpmon.agents.config import RedTeamConfig\n"
        "from fpmon.agents import node\n"
        "from fpmon.agents.parts import HONEST, parts_for\n"
        "assert parts_for(RedTeamConfig(), 'n') is HONEST\n"
        "assert parts_for(RedTeamConfig(enabled=False, drop_every=2), 'n') is HONEST\n"
        "assert 'fpmon.agents.redteam' not in sys.modules, 'an honest agent loaded the red team'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_red_team_agent_composes_the_lying_wrappers():
    parts = parts_for(RedTeamConfig(enabled=True, actual_batch=4, drop_every=2), "liar")
    assert parts is not HONEST
    assert parts.behaviours == (
        "runs batch 4, declares batch 1 (its manifest lists the fillers)",
        "drops every 2th commitment",
    )
    assert isinstance(parts.worker, functools.partial) and parts.worker.func is LyingWorker
    assert isinstance(parts.publisher, functools.partial)
    assert parts.publisher.func is LyingPublisher


def test_hidden_work_runs_real_passes_for_as_long_as_configured(tiny_engine):
    eng = tiny_engine("bfloat16", "sdpa")
    rows = [eng.encode("covert rows")]
    rt = RedTeam.from_config(RedTeamConfig(enabled=True, hidden_work_s=0.3))
    assert "hides 0.3 s of work after each batch" in rt.behaviours()
    t0 = time.monotonic()
    passes = rt.hidden_work(eng, rows, 4)
    assert passes >= 1 and time.monotonic() - t0 >= 0.3
    # an honest node (no [redteam], or hidden_work_s 0) runs nothing
    assert RedTeam().hidden_work(eng, rows, 4) == 0
    assert RedTeam.from_config(RedTeamConfig(enabled=True)).hidden_work(eng, rows, 4) == 0
