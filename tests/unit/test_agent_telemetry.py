"""Telemetry: on this host (no NVIDIA GPU) `gpus: []`, source host, real /proc figures; the NVML
path (the engine's own GPUs, GPM, compute processes, bounds) through a stand-in pynvml."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from fpmon.agents import telemetry as tele_mod
from fpmon.agents.telemetry import TelemetrySource, engine_gpus
from fpmon.testing.fakenvml import FakeGpu, FakeNvml, OldFakeNvml
from fpmon.wire import Limits, decode, encode


def _meminfo_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no MemTotal")


def test_host_without_gpu_says_so_with_real_figures():
    src = TelemetrySource("n")
    if src.nvml is not None:
        pytest.skip("this host has NVIDIA GPUs: the NVML path is exercised on the device")
    time.sleep(0.2)
    t = src.sample()
    assert t.gpus == [] and t.source == "host"
    assert "NVML" in t.host.note
    assert t.host.mem_total == _meminfo_total()
    assert t.host.mem_used is not None and 0 < t.host.mem_used < t.host.mem_total
    assert t.host.cpu_util is not None and 0.0 <= t.host.cpu_util <= 100.0


# --- the NVML path, through a stand-in pynvml (fpmon/testing/fakenvml.py) -------------------------
U0 = "GPU-aaaaaaaa-0000-0000-0000-000000000000"
U1 = "GPU-bbbbbbbb-1111-1111-1111-111111111111"


def two_gpus(**kw: object) -> FakeNvml:
    return FakeNvml([FakeGpu(U0, util=90.0, **kw), FakeGpu(U1, util=20.0, **kw)])


def test_only_the_engines_gpu_is_reported_not_every_gpu_of_the_host():
    src = TelemetrySource("n", "cuda:1", nv=two_gpus(), env={})
    t = src.sample()
    assert [(g.index, g.uuid, g.util) for g in t.gpus] == [(1, U1, 20.0)]
    assert t.source == "nvml" and U1 in t.scope and "cuda:1" in t.scope


def test_cuda_visible_devices_maps_the_engines_device_to_its_uuid():
    env = {"CUDA_VISIBLE_DEVICES": "1", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    t = TelemetrySource("n", "cuda", nv=two_gpus(), env=env).sample()
    assert [g.uuid for g in t.gpus] == [U1]
    assert "CUDA_VISIBLE_DEVICES=1" in t.scope
    # UUID prefixes, as CUDA accepts them; a runtime UUID wins over the environment.
    assert engine_gpus("cuda:0", [U0, U1], {"CUDA_VISIBLE_DEVICES": "GPU-bbbb"})[0] == [1]
    assert engine_gpus("cuda", [U0, U1], {}, lambda i: U1[4:])[0] == [1]
    # Not resolvable: nothing reported, and the reason said.
    idx, why = engine_gpus("cuda:1", [U0, U1], {"CUDA_VISIBLE_DEVICES": "0"})
    assert idx == [] and "not visible" in why
    assert engine_gpus("cuda", [U0, U1], {"CUDA_VISIBLE_DEVICES": "MIG-x"})[0] == []


def test_an_engine_on_the_cpu_reports_no_gpu_of_its_host():
    t = TelemetrySource("n", "cpu", nv=two_gpus(), env={}).sample()
    assert t.gpus == [] and t.source == "host"
    assert "no GPU" in t.scope and t.host.note == t.scope


def test_gpm_metrics_from_two_samples_an_interval_apart():
    nv = FakeNvml([FakeGpu(U0, metrics={"sm_util": 17.0, "tensor_util": 1.7})])
    src = TelemetrySource("n", "cuda:0", nv=nv, env={})
    first = src.sample().gpus[0]
    assert first.gpm is None and first.gpm_status.startswith("first sample")
    nv.gpus[0].metrics = {"sm_util": 62.0, "tensor_util": 45.7, "dram_bw_util": 12.0}
    time.sleep(0.05)
    g = src.sample().gpus[0]
    assert g.gpm_status == "ok" and g.gpm is not None
    assert (g.gpm.sm_util, g.gpm.tensor_util, g.gpm.dram_bw_util) == (62.0, 45.7, 12.0)
    assert g.gpm.tensor_hmma_util is None  # the GPU did not report it: absent, not 0
    assert 0.04 < g.gpm.interval_s < 5
    assert nv.calls.count("gpm_sample") == 2  # one NVML GPM sample per telemetry second


def test_gpm_unsupported_says_why_and_invents_nothing():
    t = TelemetrySource("n", "cuda:0", nv=FakeNvml([FakeGpu(U0, gpm=False)]), env={})
    for _ in range(2):
        g = t.sample().gpus[0]
        assert g.gpm is None and g.gpm_status.startswith("unsupported:")
    old = TelemetrySource("n", "cuda:0", nv=OldFakeNvml([FakeGpu(U0)]), env={})
    g = old.sample().gpus[0]
    assert g.gpm is None and "no GPM API" in g.gpm_status
    off = TelemetrySource("n", "cuda:0", nv=FakeNvml([FakeGpu(U0)]), env={}, gpm=False)
    assert off.sample().gpus[0].gpm_status.startswith("off")


@pytest.fixture
def stranger() -> Iterator[int]:
    """A live process that is not a descendant of this one (its parent, a shell, exited)."""
    sh = subprocess.Popen(
        ["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(30)' & echo $!"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sh.stdout is not None
    pid = int(sh.stdout.readline())
    sh.wait()
    yield pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, 9)


def test_compute_processes_are_listed_and_the_engines_marked(stranger: int):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    other = stranger
    try:
        me = os.getpid()
        gpu = FakeGpu(U0, procs=[(me, 3 << 30), (child.pid, 1 << 30), (other, 800 << 20)])
        t = TelemetrySource("n", "cuda:0", nv=FakeNvml([gpu]), env={}).sample()
        procs = {p.pid: p for p in t.gpus[0].processes}
        assert t.gpus[0].procs == 3
        assert procs[me].engine is True and procs[me].used_memory == 3 << 30
        assert procs[child.pid].engine is True  # a child of the engine's process
        assert procs[other].engine is False and procs[other].used_memory == 800 << 20
        assert procs[other].name and procs[other].name.startswith("python")
    finally:
        child.kill()
        child.wait()
    # NVML's pids from another pid namespace: the agent cannot tell, and says so (None).
    gpu = FakeGpu(U0, procs=[(4_000_000, None), (4_000_001, 1 << 20)])
    g = TelemetrySource("n", "cuda:0", nv=FakeNvml([gpu]), env={}).sample().gpus[0]
    assert [p.engine for p in g.processes] == [None, None]
    assert g.processes[0].used_memory is None and g.processes[0].name is None


def test_a_sidecar_servers_processes_are_the_engines_not_foreign(stranger: int):
    # In sidecar mode the model runs in the operator's vLLM server: its workers hold the GPU
    # and are not this agent's descendants. Named by the server (its plugin's pid), they are
    # the engine's; a server restarted with new workers is followed at the next sample.
    gpu = FakeGpu(U0, procs=[(stranger, 3 << 30)])
    src = TelemetrySource("n", "cuda:0", nv=FakeNvml([gpu]), env={})
    assert src.sample().gpus[0].processes[0].engine is False  # before: foreign
    known: list[int] = []
    src.also_engine(lambda: known)
    assert src.sample().gpus[0].processes[0].engine is False  # not named yet
    known.append(stranger)
    assert src.sample().gpus[0].processes[0].engine is True


def test_out_of_bounds_nvml_figures_are_dropped_and_named_not_sent():
    gpu = FakeGpu(U0, util=-3.0, metrics={"sm_util": 40.0, "tensor_util": 250.0})
    gpu.mem_used = gpu.mem_total + 1
    src = TelemetrySource("n", "cuda:0", nv=FakeNvml([gpu]), env={})
    src.sample()
    g = src.sample().gpus[0]
    assert g.util is None and "refused" in g.errors["util"]
    assert g.mem_used is None and "mem_used" in g.errors and g.mem_total == gpu.mem_total
    assert g.gpm is not None and g.gpm.sm_util == 40.0 and g.gpm.tensor_util is None
    assert "gpm.tensor_util" in g.errors
    t = src.sample()
    assert decode(encode(t), Limits()) == t  # what is sent passes the wire's own checks


def test_engine_process_cpu_time_is_reported_on_any_host():
    src = TelemetrySource("n", "cpu", nv=FakeNvml([]), env={})
    first = src.sample().engine
    w0 = time.monotonic()
    end = time.process_time() + 0.3
    while time.process_time() < end:  # hidden work inside the engine's own process
        pass
    e = src.sample().engine
    wall = time.monotonic() - w0
    assert first is not None and e is not None and e.pid == os.getpid()
    assert e.cpu_s is not None and first.cpu_s is not None and e.cpu_s >= first.cpu_s + 0.25
    # Utilisation over the wall time between samples: on a loaded host the 0.3 CPU-s take
    # longer, so the bound follows the wall clock measured here rather than a fixed figure.
    assert e.cpu_util is not None and e.cpu_util >= 0.8 * 100 * 0.25 / wall
    assert e.note == "psutil"
    assert e.rss and e.threads


def test_engine_cpu_without_psutil_falls_back_to_this_process(monkeypatch):
    monkeypatch.setattr(tele_mod, "_psutil", lambda: None)
    e = TelemetrySource("n", "cpu", nv=FakeNvml([]), env={}).sample().engine
    assert e is not None and e.cpu_s is not None and e.rss is None
    assert e.note.startswith("os.times")
