"""Telemetry on this host: no NVIDIA GPU, so `gpus: []`, source host, real /proc figures."""

from __future__ import annotations

import time

import pytest

from fpmon.agents.telemetry import TelemetrySource


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
