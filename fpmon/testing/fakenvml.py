"""A stand-in for the `pynvml` module: CI has no GPU, so NVML parsing is tested through the real
code paths (`agents/telemetry.py`, `fpmon/gpm.py`) against this object.

It reuses pynvml's own ctypes structures and constants (importable without a driver), so the
GPM request the code builds is the one the real library would send; only the calls into the
driver are simulated. Each fake GPU holds the figures the next samples will report.

A test double, kept only because CI has no GPU ("no mocks where the real thing runs"): where a
GPU is, the real pynvml runs (the GPU tests and benches). Used by the unit tests and by
`bench/hidden_work_gpu.py --dry-run` (no GPU).
"""

from __future__ import annotations

import ctypes
import itertools
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pynvml


@dataclass
class FakeGpu:
    uuid: str
    name: str = "NVIDIA H200"
    util: float = 0.0
    mem_util: float = 0.0
    mem_used: int = 1 << 30
    mem_total: int = 143771 << 20
    gpm: bool = True  # nvmlGpmQueryDeviceSupport's answer
    # GpmMetrics field -> % reported by the next nvmlGpmMetricsGet; absent: "not supported"
    metrics: dict[str, float] = field(default_factory=dict)
    procs: list[tuple[int, int | None]] = field(default_factory=list)  # (pid, used bytes)


_PLAIN = ("NVMLError", "nvmlEventTypeXidCriticalError")


def _err(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


class FakeNvml(SimpleNamespace):
    """`FakeNvml([FakeGpu(...), ...])`: a module-like object with the calls the agent makes."""

    def __init__(self, gpus: list[FakeGpu]) -> None:
        super().__init__()
        for k in dir(pynvml):
            if k.startswith(("NVML_", "c_nvml")) or k in (
                "NVMLError",
                "nvmlEventTypeXidCriticalError",
            ):
                setattr(self, k, getattr(pynvml, k))
        self.gpus = gpus
        self.calls: list[str] = []
        self._samples: dict[int, dict[str, float]] = {}
        self._addr = itertools.count(0x1000, 0x10)
        self._fields = {getattr(pynvml, c): f for f, c in _METRIC_CONSTS.items()}

    # --- devices ----------------------------------------------------------------------------
    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> FakeGpu:
        return self.gpus[i]

    def nvmlDeviceGetUUID(self, h: FakeGpu) -> str:
        return h.uuid

    def nvmlDeviceGetName(self, h: FakeGpu) -> str:
        return h.name

    def nvmlDeviceGetUtilizationRates(self, h: FakeGpu) -> Any:
        return SimpleNamespace(gpu=h.util, memory=h.mem_util)

    def nvmlDeviceGetMemoryInfo(self, h: FakeGpu) -> Any:
        return SimpleNamespace(used=h.mem_used, total=h.mem_total)

    def nvmlDeviceGetPowerUsage(self, h: FakeGpu) -> int:
        return 120_000

    def nvmlDeviceGetClockInfo(self, h: FakeGpu, which: int) -> int:
        return 1980

    def nvmlDeviceGetTemperature(self, h: FakeGpu, which: int) -> int:
        return 40

    def nvmlDeviceGetComputeRunningProcesses(self, h: FakeGpu) -> list[Any]:
        return [SimpleNamespace(pid=p, usedGpuMemory=m) for p, m in h.procs]

    def nvmlEventSetCreate(self) -> Any:
        raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)

    # --- GPM --------------------------------------------------------------------------------
    def nvmlGpmQueryDeviceSupport(self, h: FakeGpu) -> Any:
        s = pynvml.c_nvmlGpmSupport_t()
        s.isSupportedDevice = int(h.gpm)
        return s

    def nvmlGpmSampleAlloc(self) -> Any:
        return ctypes.cast(ctypes.c_void_p(next(self._addr)), pynvml.c_nvmlGpmSample_t)

    def nvmlGpmSampleFree(self, s: Any) -> None:
        self._samples.pop(_address(s), None)

    def nvmlGpmSampleGet(self, h: FakeGpu, s: Any) -> Any:
        if not h.gpm:
            raise _err(pynvml.NVML_ERROR_NOT_SUPPORTED)
        self.calls.append("gpm_sample")
        self._samples[_address(s)] = dict(h.metrics)
        return s

    def nvmlGpmMetricsGet(self, mg: Any) -> Any:
        assert mg.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        first, second = _address(mg.sample1), _address(mg.sample2)
        assert first in self._samples and second in self._samples and first != second
        now = self._samples[second]
        for i in range(mg.numMetrics):
            m = mg.metrics[i]
            name = self._fields.get(m.metricId)
            if name in now:
                m.value, m.nvmlReturn = now[name], pynvml.NVML_SUCCESS
            else:
                m.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
        return mg


class OldFakeNvml(FakeNvml):
    """An nvidia-ml-py from before GPM: the module has no GPM calls at all."""

    @property
    def nvmlGpmQueryDeviceSupport(self) -> Any:
        raise AttributeError("nvmlGpmQueryDeviceSupport")


def _address(s: Any) -> int:
    return int(ctypes.cast(s, ctypes.c_void_p).value or 0)


# Written out again, not imported from fpmon.gpm.METRICS: the fake answers by pynvml's own
# constants, so a wrong name or pairing in the product's table fails a test instead of agreeing
# with itself.
_METRIC_CONSTS = {
    "graphics_util": "NVML_GPM_METRIC_GRAPHICS_UTIL",
    "sm_util": "NVML_GPM_METRIC_SM_UTIL",
    "sm_occupancy": "NVML_GPM_METRIC_SM_OCCUPANCY",
    "tensor_util": "NVML_GPM_METRIC_ANY_TENSOR_UTIL",
    "tensor_hmma_util": "NVML_GPM_METRIC_HMMA_TENSOR_UTIL",
    "tensor_imma_util": "NVML_GPM_METRIC_IMMA_TENSOR_UTIL",
    "tensor_dfma_util": "NVML_GPM_METRIC_DFMA_TENSOR_UTIL",
    "dram_bw_util": "NVML_GPM_METRIC_DRAM_BW_UTIL",
    "fp16_util": "NVML_GPM_METRIC_FP16_UTIL",
    "fp32_util": "NVML_GPM_METRIC_FP32_UTIL",
    "fp64_util": "NVML_GPM_METRIC_FP64_UTIL",
}
