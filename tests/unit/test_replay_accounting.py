"""Hidden-work accounting on the verifier: observed GPU activity of a node's own GPUs (or a CPU
engine's CPU time) against what its committed tokens explain, per metric; foreign processes;
bad telemetry refused."""

from __future__ import annotations

import os
import time

import msgpack
import pytest

from fpmon.errors import FpmonError
from fpmon.replay import cputime
from fpmon.replay.accounting import (
    CPU_FLOOR,
    CPU_RATIO,
    CPU_SOURCE,
    DEFAULT_SOURCE,
    Accounting,
    ReferenceMeter,
    settings,
)
from fpmon.replay.config import ReplayConfig, TimingConfig
from fpmon.replay.intake import Intake
from fpmon.replay.sampling import Sampler
from fpmon.replay.timing import TimingModel
from fpmon.replay.watch import Watch
from fpmon.testing.fakenvml import FakeGpu, FakeNvml
from fpmon.wire import (
    GpmMetrics,
    GpuProcess,
    GpuSample,
    HostSample,
    Limits,
    NodeSummary,
    ProcessSample,
    StateReply,
    Telemetry,
    decode,
    encode,
)

# The H200's honest launch-bound decode (docs/GPU.md): ~50 tokens/s, NVML util ~22%, GPM SM
# ~3.8%, tensor ~0.2%, DRAM ~3.2%; with bf16 matmuls at 50% duty in another process: util 94%,
# SM 58%, tensor 52%, DRAM 16%.
HONEST = {"util": 22.0, "sm_util": 3.8, "tensor_util": 0.2, "dram_bw_util": 3.2}
HIDDEN = {"util": 94.0, "sm_util": 58.0, "tensor_util": 52.0, "dram_bw_util": 16.0}
TOKENS_PER_S = 50


def tele(node: str, figures: dict[str, float], uuid: str = "GPU-0", **gpu: object) -> Telemetry:
    gpm = GpmMetrics(interval_s=1.0, **{k: v for k, v in figures.items() if k != "util"})
    g = GpuSample(index=0, uuid=uuid, util=figures["util"], gpm=gpm, gpm_status="ok", **gpu)
    return Telemetry(node=node, t=time.time(), gpus=[g])


def reference(acc: Accounting, node: str, replays: int = 5) -> None:
    """Replays of the node's records on the reference GPU: 32 tokens in 0.64 s each, with the
    honest decode's own GPM activity over that time."""
    for _ in range(replays):
        act = {m: v / 100 * 0.64 for m, v in HONEST.items() if m != "util"}
        acc.judged(node, 0.64, 32, act, "cuda")


def run(acc: Accounting, node: str, figures: dict[str, float], seconds: int, t0: float = 1000.0):
    for i in range(seconds + 1):
        acc.telemetry(node, tele(node, figures), t0 + i)
    return acc.check(node, t0 + seconds, lambda start: TOKENS_PER_S * seconds)


def test_hidden_work_is_unexplained_activity_per_metric_with_its_threshold() -> None:
    acc = Accounting(settings({}, 0.25), window_s=60)
    reference(acc, "n")
    assert run(acc, "n", HONEST, 60) is None  # honest: observed matches explained
    assert "tensor_util" in acc.describe("n") and "OVER" not in acc.describe("n")
    a = run(acc, "n", HIDDEN, 60, t0=2000.0)
    assert a is not None and a.kind == "undeclared_capacity"
    assert set(a.details["over"]) == {"sm_util", "tensor_util", "dram_bw_util"}
    t = a.details["metrics"]["tensor_util"]
    # 61 GPM intervals of 1 s at 52% (the first sample of the window brings its own interval)
    assert t["observed_s"] == pytest.approx(31.72) and t["explained_s"] == pytest.approx(0.12)
    assert t["ratio"] == pytest.approx(264.3, rel=0.01) and t["threshold"] == 2.0
    assert "GPM on the reference GPU around 5 replays" in t["explained_by"]
    # NVML util is saturated and judged against a wall-time bound: not over, and said so.
    u = a.details["metrics"]["util"]
    assert not u["over"] and "upper bound" in u["explained_by"]
    assert a.details["threshold_source"] == DEFAULT_SOURCE and "H200" in a.message
    assert "tensor_util 31.7 s observed vs 0.12 s explained" in a.message
    assert a.details["window_s"] == 65.0  # a gap in telemetry counts 5 s at most


def test_ten_percent_duty_side_work_is_caught_on_tensor_and_sm() -> None:
    """The weakest measured case (H200: tensor 0.2 -> 5.6%, SM 3.8 -> 9.5%, NVML util 31%)."""
    acc = Accounting(settings({}, 0.25), window_s=60)
    reference(acc, "n")
    a = run(acc, "n", {"util": 31.0, "sm_util": 9.5, "tensor_util": 5.6, "dram_bw_util": 4.7}, 60)
    assert a is not None and set(a.details["over"]) == {"sm_util", "tensor_util"}


def test_each_node_is_charged_with_its_own_gpus_only() -> None:
    acc = Accounting(settings({}, 0.25), window_s=10)
    for n in ("a", "b"):
        reference(acc, n)
    for i in range(11):
        acc.telemetry("a", tele("a", HIDDEN, "GPU-0"), 1000.0 + i)
        acc.telemetry("b", tele("b", HONEST, "GPU-1"), 1000.0 + i)
    tokens = lambda start: TOKENS_PER_S * 10  # noqa: E731
    a, b = acc.check("a", 1010.0, tokens), acc.check("b", 1010.0, tokens)
    assert a is not None and a.details["gpus"] == ["GPU-0"] and b is None


def test_activity_with_no_committed_tokens_is_unexplained_above_the_floor() -> None:
    acc = Accounting(settings({}, 0.25), window_s=30)  # no replay of this node yet: no matter
    idle = {"util": 0.0, "sm_util": 0.2, "tensor_util": 0.0, "dram_bw_util": 0.1}
    for i in range(31):
        acc.telemetry("n", tele("n", idle), 1000.0 + i)
    assert acc.check("n", 1030.0, lambda s: 0) is None  # under the 1% floor: noise
    for i in range(31):
        acc.telemetry("n", tele("n", HIDDEN), 2000.0 + i)
    a = acc.check("n", 2030.0, lambda s: 0)
    assert a is not None and a.details["metrics"]["tensor_util"]["ratio"] is None
    assert "no tokens to explain it" in a.message


def test_without_gpm_on_the_reference_gpm_metrics_are_not_judged_and_say_why() -> None:
    acc = Accounting(settings({}, 0.25), window_s=60)
    for _ in range(5):
        acc.judged("n", 0.64, 32, None, "cpu")  # a CPU reference: wall time only
    a = run(acc, "n", {**HONEST, "util": 100.0}, 60)
    # util: 60 s busy vs 60 s of declared work at most: not over; GPM metrics: not judged.
    assert a is None
    assert "not judged: dram_bw_util, sm_occupancy, sm_util, tensor_util" in acc.describe("n")
    shares = settings({"reference_shares": {"tensor_util": 0.01}}, 0.25)
    acc = Accounting(shares, window_s=60)
    for _ in range(5):
        acc.judged("n", 0.64, 32, None, "cpu")
    a = run(acc, "n", HIDDEN, 60)
    assert a is not None and a.details["over"] == ["tensor_util"]
    assert "reference_shares.tensor_util" in a.details["metrics"]["tensor_util"]["explained_by"]
    assert a.details["threshold_source"] == DEFAULT_SOURCE  # shares are not thresholds


def test_a_mostly_idle_node_busier_than_all_its_declared_work_on_nvml_util() -> None:
    acc = Accounting(settings({}, 0.25), window_s=60)
    for _ in range(5):
        acc.judged("n", 0.64, 32, None, "cpu")
    for i in range(61):
        acc.telemetry("n", Telemetry(node="n", t=1.0, gpus=[GpuSample(index=0, util=100)]), i)
    a = acc.check("n", 60.0, lambda s: 100)  # 100 tokens: 2 s of declared work at most
    assert a is not None and a.details["over"] == ["util"]
    assert a.details["metrics"]["util"]["explained_s"] == pytest.approx(2.0)
    assert "sm_util" in a.details["not_judged"]


def proc(pid: int, engine: bool | None, mem: int | None = 800 << 20) -> GpuProcess:
    return GpuProcess(pid=pid, used_memory=mem, name="python3", engine=engine)


def test_a_foreign_process_on_the_nodes_gpu_is_named_once() -> None:
    acc = Accounting(settings({}, 0.25), window_s=60)
    mine, other = proc(100, True, 4 << 30), proc(200, False)
    t = tele("n", HONEST, processes=[mine, other])
    assert acc.telemetry("n", t, 1.0) == []  # once: could be a race with a child starting
    (a,) = acc.telemetry("n", t, 2.0)
    assert a.kind == "foreign_process" and a.alert_id == "foreign_process:n:GPU-0:200"
    assert "pid 200 python3 holding 0.84 GB" in a.message and "engine pid(s) 100" in a.message
    assert a.details["engine_pids"] == [100] and a.details["used_memory"] == 800 << 20
    assert acc.telemetry("n", t, 3.0) == []  # the same process: not again
    # Only the engine, or processes the agent cannot attribute (another pid namespace): none.
    quiet = Accounting(settings({}, 0.25), window_s=60)
    for i in range(5):
        t = tele("n", HONEST, processes=[mine, proc(300, None)])
        assert quiet.telemetry("n", t, float(i)) == []
    # A process seen once, gone, then back once, is not two consecutive samples.
    flick = Accounting(settings({}, 0.25), window_s=60)
    for i, ps in enumerate(([mine, other], [mine], [mine, other])):
        assert flick.telemetry("n", tele("n", HONEST, processes=ps), float(i)) == []


def test_settings_are_checked_and_name_their_source() -> None:
    s = settings({}, 0.25)
    assert s.ratio["util"] == 1.25 and s.ratio["tensor_util"] == 2.0 and "H200" in s.source
    mine = settings({"ratio": {"tensor_util": 5}, "threshold_source": "our fleet, Dec"}, 0.25)
    assert mine.ratio["tensor_util"] == 5.0 and mine.source == "our fleet, Dec"
    assert settings({"floor": {"sm_util": 0.02}}, 0.25).source == "configured"
    for bad in (
        {"ratoi": {}},
        {"ratio": {"tensor": 2}},
        {"ratio": {"sm_util": 0.5}},
        {"reference_shares": {"sm_util": 3}},
        {"foreign_min_samples": 0},
    ):
        with pytest.raises(FpmonError):
            settings(bad, 0.25)


def test_reference_meter_measures_gpm_around_a_replay() -> None:
    nv = FakeNvml([FakeGpu("GPU-r", metrics={"sm_util": 4.0, "tensor_util": 0.2})])
    meter = ReferenceMeter("cuda:0", nv=nv)
    with meter.measure() as act:
        time.sleep(0.05)
    assert meter.status.startswith("ok") and "GPU-r" in meter.status
    assert act["sm_util"] == pytest.approx(0.04 * 0.05, rel=0.5)
    assert set(act) == {"sm_util", "tensor_util"}  # what the GPU did not report stays absent
    with ReferenceMeter("cpu").measure() as none:
        pass
    assert none == {}


def test_bad_telemetry_is_refused_counted_and_never_an_alert() -> None:
    intake = Intake({"n1": os.urandom(32)}, Sampler(os.urandom(32), 1.0, 1.0), Limits())
    cfg = ReplayConfig(timing=TimingConfig(capacity_window_s=2.0))
    watch = Watch(cfg, intake, TimingModel(0.5, 5, 0.25))
    good = tele("n1", HONEST).to_map()
    now = time.time()
    for i, gpu in enumerate(({"util": -5.0}, {"util": float("nan")}, {"util": 250.0})):
        bad = {**good, "gpus": [{**good["gpus"][0], **gpu}]}
        intake.handle([b"telemetry", msgpack.packb(bad)], "n1")  # one a second, as an agent
        assert watch.check(now + i) == []
    intake.handle(encode(tele("n1", HONEST)), "n1")
    assert intake.stats["n1"].rejects["schema"] == 3
    (t,) = intake.drain()[2]  # only the good one reaches the accounting
    watch.telemetry(t.node, t)
    assert watch.check(now + 5) == []


def test_the_last_window_is_kept_typed_for_the_node_summary() -> None:
    """What a monitor's fleet column reads (NodeSummary.accounting): the same figures as the
    alert, unrounded, the verifier's own `over`, and why each other metric was not judged."""
    acc = Accounting(settings({}, 0.25), window_s=60)
    assert acc.window("n") is None
    reference(acc, "n")
    a = run(acc, "n", HIDDEN, 60)
    w = acc.window("n")
    assert a is not None and w is not None
    assert w.tokens == TOKENS_PER_S * 60 and w.window_s == pytest.approx(a.details["window_s"])
    by = {m.metric: m for m in w.metrics}
    assert set(by) == {"util", "sm_util", "tensor_util", "dram_bw_util"}
    assert {m for m, x in by.items() if x.over} == set(a.details["over"])
    t = a.details["metrics"]["tensor_util"]
    assert by["tensor_util"].observed_s == pytest.approx(t["observed_s"], abs=1e-3)
    assert by["tensor_util"].explained_s == pytest.approx(t["explained_s"], abs=1e-3)
    assert by["tensor_util"].threshold == t["threshold"]
    assert "sm_occupancy" in w.not_judged and w.threshold_source == DEFAULT_SOURCE
    # It crosses the wire inside a state reply as it is.
    reply = StateReply(node="replay", t=time.time(), nodes={"n": NodeSummary(accounting=w)})
    assert decode(encode(reply)).nodes["n"].accounting == w
    # An honest window replaces it: the summary shows the latest, over or not.
    assert run(acc, "n", HONEST, 60, t0=2000.0) is None
    w2 = acc.window("n")
    assert w2 is not None and w2.start_t > w.start_t and not any(m.over for m in w2.metrics)


# --- CPU engines: the engine process's CPU time against the reference's per token ----------
# The demo fleet on this 2-core host (replay/accounting.py, docs/REPLAY.md): the reference spent
# 2.8 ms of CPU per token around its replays; the honest node ~10 tokens/s at 1.02-1.83x that;
# matmuls at 50% duty in the engine process added 0.09-0.25 of a core.
REF_CPU_PER_TOKEN = 0.0028
TOKENS_PER_S_CPU = 10


def cpu_tele(node: str, cpu_s: float, t: float, cpus: int = 2, pid: int = 4242) -> Telemetry:
    return Telemetry(
        node=node,
        t=t,
        gpus=[],
        host=HostSample(cpus=cpus),
        source="host",
        engine=ProcessSample(pid=pid, cpu_s=cpu_s),
    )


def cpu_reference(acc: Accounting, node: str, device: str = "cpu") -> None:
    for _ in range(5):  # 40 tokens replayed in 0.2 s of wall time each
        acc.judged(node, 0.2, 40, None, device, cpu_s=40 * REF_CPU_PER_TOKEN)


def cpu_run(acc: Accounting, node: str, cores: float, seconds: int, t0: float = 1000.0):
    """`seconds` of telemetry at 1 Hz from an engine spending `cores` CPU-seconds a second."""
    for i in range(seconds + 1):
        acc.telemetry(node, cpu_tele(node, 50.0 + cores * i, t0 + i), t0 + i)
    return acc.check(node, t0 + seconds, lambda start: TOKENS_PER_S_CPU * seconds)


def test_cpu_engine_honest_ratio_passes_hidden_work_alarms() -> None:
    explained = TOKENS_PER_S_CPU * REF_CPU_PER_TOKEN  # 0.028 of a core
    acc = Accounting(settings({}, 0.25), window_s=15)
    cpu_reference(acc, "n")
    assert cpu_run(acc, "n", 1.83 * explained, 15) is None  # the honest maximum measured
    assert "engine CPU" in acc.describe("n") and "OVER" not in acc.describe("n")
    a = cpu_run(acc, "n", explained * 1.3 + 0.1, 15, t0=2000.0)  # + a tenth of a core hidden
    assert a is not None and a.kind == "undeclared_capacity" and a.details["over"] == ["cpu"]
    c = a.details["metrics"]["cpu"]
    assert c["observed_s"] == pytest.approx(15 * (explained * 1.3 + 0.1))
    assert c["explained_s"] == pytest.approx(15 * explained)
    assert c["ratio"] == pytest.approx(4.87, rel=0.01) and c["threshold"] == CPU_RATIO
    assert "reference process CPU time per token around 5 replays on cpu" in c["explained_by"]
    assert "engine process did more than its 150 committed tokens" in a.message
    assert a.details["threshold_source"] == CPU_SOURCE and "demo fleet" in a.message
    assert a.details["not_judged"] == {}  # a CPU node is judged on `cpu` only


def test_cpu_engine_idle_is_under_the_floor_side_work_alone_is_not() -> None:
    acc = Accounting(settings({}, 0.25), window_s=15)
    cpu_reference(acc, "n")
    idle = lambda start: 0  # noqa: E731
    for i in range(16):  # an idle agent's own loops: 0.007 of a core, measured
        acc.telemetry("n", cpu_tele("n", 50.0 + 0.007 * i, 1000.0 + i), 1000.0 + i)
    assert acc.check("n", 1015.0, idle) is None
    for i in range(16):
        acc.telemetry("n", cpu_tele("n", 60.0 + 0.2 * i, 2000.0 + i), 2000.0 + i)
    a = acc.check("n", 2015.0, idle)
    assert a is not None and a.details["metrics"]["cpu"]["ratio"] is None
    assert "no tokens to explain it" in a.message


def test_cpu_not_judged_without_a_cpu_reference_and_waits_for_the_first_replay() -> None:
    acc = Accounting(settings({}, 0.25), window_s=15)
    # Tokens and no replay yet: the window stays open until a replay prices a token ...
    for i in range(16):
        acc.telemetry("n", cpu_tele("n", 50.0 + 0.5 * i, 1000.0 + i), 1000.0 + i)
    assert acc.check("n", 1015.0, lambda s: 150) is None and acc.describe("n") == ""
    cpu_reference(acc, "n")
    a = acc.check("n", 1016.0, lambda s: 160)  # ... then it is judged whole
    assert a is not None and a.details["window_s"] == 16.0
    # ... for at most four windows: then it closes unjudged, saying why.
    late = Accounting(settings({}, 0.25), window_s=15)
    for i in range(61):
        late.telemetry("n", cpu_tele("n", 50.0 + 0.5 * i, 1000.0 + i), 1000.0 + i)
    assert late.check("n", 1060.0, lambda s: 600) is None
    assert "not judged: cpu" in late.describe("n")
    # A reference on a GPU: its CPU time says nothing of what a CPU engine spends.
    gpu = Accounting(settings({}, 0.25), window_s=15)
    cpu_reference(gpu, "n", device="cuda:0")
    assert cpu_run(gpu, "n", 0.5, 15) is None
    assert gpu.per_token("n", "cpu")[0] is None
    assert "its CPU time is not what a CPU engine spends" in gpu.per_token("n", "cpu")[1]


def test_impossible_engine_cpu_time_is_refused_counted_and_never_an_alert() -> None:
    acc = Accounting(settings({}, 0.25), window_s=15)
    cpu_reference(acc, "n")
    samples = [
        (50.0, 2),
        (40.0, 2),  # backwards
        (40.1, 2),
        (45.0, 2),  # 4.9 CPU-s in 1 s on 2 cores
        (45.1, 2),
        (45.2, 0),  # no core count: nothing bounds it
        (45.3, 2),
    ]
    for i, (cpu_s, cpus) in enumerate(samples):
        acc.telemetry("n", cpu_tele("n", cpu_s, 1000.0 + i, cpus=cpus), 1000.0 + i)
    for i in range(7, 17):  # and the rest of the window honest (it began at the 2nd sample)
        acc.telemetry("n", cpu_tele("n", 45.3 + 0.03 * (i - 6), 1000.0 + i), 1000.0 + i)
    assert acc.check("n", 1016.0, lambda s: 150) is None
    assert dict(acc.refused["n"]) == {
        "engine cpu_s went backwards": 1,
        "engine cpu_s rose more than the host's cores allow": 1,
        "host cpus not reported: engine CPU time cannot be bounded": 1,
    }
    assert "; refused samples: " in acc.describe("n")
    assert "engine cpu_s went backwards 1" in acc.describe("n")
    # A restarted engine (another pid) starts its own clock: no interval across the two.
    acc.telemetry("n", cpu_tele("n", 1.0, 1017.0, pid=777), 1017.0)
    acc.telemetry("n", cpu_tele("n", 1.03, 1018.0, pid=777), 1018.0)
    assert sum(acc.refused["n"].values()) == 3


def test_negative_or_nan_engine_cpu_time_is_refused_at_the_intake() -> None:
    intake = Intake({"n1": os.urandom(32)}, Sampler(os.urandom(32), 1.0, 1.0), Limits())
    cfg = ReplayConfig(timing=TimingConfig(capacity_window_s=2.0))
    watch = Watch(cfg, intake, TimingModel(0.5, 5, 0.25))
    good = cpu_tele("n1", 10.0, time.time()).to_map()
    now = time.time()
    for i, bad in enumerate((-1.0, float("nan"), float("inf"))):
        doc = {**good, "engine": {**good["engine"], "cpu_s": bad}}
        intake.handle([b"telemetry", msgpack.packb(doc)], "n1")
        assert watch.check(now + i) == []
    assert intake.stats["n1"].rejects["schema"] == 3
    assert intake.drain()[2] == []


def test_cpu_settings_are_checked_and_say_where_they_came_from() -> None:
    s = settings({}, 0.25)
    assert s.ratio["cpu"] == CPU_RATIO and s.floor["cpu"] == CPU_FLOOR
    assert s.source_of("cpu") == CPU_SOURCE and s.source_of("sm_util") == DEFAULT_SOURCE
    mine = settings({"ratio": {"cpu": 4}, "floor": {"cpu": 2.0}}, 0.25)  # 2 cores of floor
    assert mine.ratio["cpu"] == 4.0 and mine.source_of("cpu") == "configured"
    for bad in (
        {"reference_shares": {"cpu": 0.5}},
        {"ratio": {"cpu": 0.9}},
        {"floor": {"cpu": -1}},
    ):
        with pytest.raises(FpmonError):
            settings(bad, 0.25)


def test_process_cpu_time_is_measured_around_a_block() -> None:
    with cputime.measure() as got:
        end = time.process_time() + 0.05
        while time.process_time() < end:
            pass
    assert got["cpu_s"] >= 0.05
