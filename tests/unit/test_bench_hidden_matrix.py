"""bench/hidden_work_matrix.py without agents: its phase list, the node config a phase asks for
(refused keys skip the phase), and the log of every accounting window. Run only on the GPU
otherwise, so a stale import or a changed accounting hook would show there first, at GPU cost."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from fpmon.errors import FpmonError
from fpmon.replay.accounting import Accounting, settings
from fpmon.wire import GpmMetrics, GpuSample, Telemetry

BENCH = Path(__file__).resolve().parents[2] / "bench" / "hidden_work_matrix.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hidden_work_matrix", BENCH)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # its dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def test_phases_parse_and_say_what_the_node_runs(bench: ModuleType) -> None:
    ps = bench.parse_phases(bench.DEFAULT_PHASES)
    assert [p.kind for p in ps][:2] == ["quiet", "compute"] and ps[0].planned_s == 120
    by = {p.name: p for p in ps}
    assert by["quiet"].redteam is None and by["compute0.5"].redteam is None
    assert by["batch4"].redteam == {"enabled": True, "actual_batch": 4}
    assert by["instream0.5"].redteam == {"enabled": True, bench.SIDE_WORK_KEY: 0.5}
    for bad in ("quiet5:10", "compute:10", "compute1.5:10", "batch2.5:10", "sideways:3", "x"):
        with pytest.raises(SystemExit):
            bench.parse_phases(bad)


def test_a_key_the_agent_config_does_not_know_is_refused_before_any_restart(
    bench: ModuleType, tmp_path: Path
) -> None:
    args = argparse.Namespace(
        model="tiny", dry_run=True, device_of={"node": "cpu", "control": "cpu"}
    )
    ok = bench.agent_doc(tmp_path, "node", args, [20001, 20002, 20003], {"actual_batch": 4})
    assert bench.write_agent_config(tmp_path, "node", "batch4", ok).exists()
    assert ok["state_dir"] == str(tmp_path / "node" / "state")  # kept across restarts
    doc = bench.agent_doc(tmp_path, "node", args, [20001, 20002, 20003], {"bogus_duty": 0.5})
    with pytest.raises(FpmonError, match="unknown key 'bogus_duty'"):
        bench.write_agent_config(tmp_path, "node", "instream", doc)


def test_every_accounting_window_is_logged_with_its_ratios(
    bench: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    acc = Accounting(settings({}, 0.25), window_s=10)
    log = bench.WindowLog(acc)
    for _ in range(5):  # replays: 32 tokens, 0.64 s, the honest decode's GPM activity
        acc.judged("n", 0.64, 32, {"sm_util": 0.038 * 0.64, "tensor_util": 0.002 * 0.64}, "cuda")
    for quiet, t0 in ((True, 1000.0), (False, 2000.0)):
        for i in range(11):
            gpm = GpmMetrics(interval_s=1.0, sm_util=3.8, tensor_util=0.2 if quiet else 52.0)
            g = GpuSample(index=0, uuid="GPU-0", util=22.0, gpm=gpm, gpm_status="ok")
            acc.telemetry("n", Telemetry(node="n", t=time.time(), gpus=[g]), t0 + i)
        acc.check("n", t0 + 10, lambda start: 500)
    honest, hidden = log.rows
    assert honest["node"] == "n" and honest["t_end"] - honest["t_start"] == pytest.approx(10)
    assert not honest["metrics"]["tensor_util"]["over"]
    assert hidden["metrics"]["tensor_util"]["over"] and hidden["tokens"] == 500
    r = bench.ratio_range(log.rows)
    assert r["sm_util"][1] < 2 and r["tensor_util"][1] > 100  # [min, max] over both windows
