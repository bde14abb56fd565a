"""How busy the declared work keeps the GPU: kernel time over elapsed time, and NVML's view.

The profiler's kernel intervals are merged (overlaps counted once) and divided by the span from
the first kernel's start to the last one's end: the share of time at least one kernel ran.
NVML's utilisation (what node telemetry reports) is sampled alongside for comparison.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from fpmon.loop import BackgroundLoop


def kernel_busy(run: Callable[[], object]) -> dict[str, Any]:
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        run()
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    spans = sorted(
        (e.time_range.start, e.time_range.end)
        for e in prof.events()
        if e.device_type == DeviceType.CUDA and e.time_range.end > e.time_range.start
    )
    if not spans:
        return {"error": "the profiler saw no CUDA kernels"}
    busy, cur_s, cur_e = 0.0, spans[0][0], spans[0][1]
    for s, e in spans[1:]:
        if s > cur_e:
            busy += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    busy += cur_e - cur_s
    span = spans[-1][1] - spans[0][0]
    return {
        "kernels": len(spans),
        "busy_us": busy,
        "span_us": span,
        "wall_s": wall,
        "busy_fraction": busy / span if span > 0 else 0.0,
    }


class UtilSampler(BackgroundLoop):
    """NVML GPU utilisation sampled every 50 ms in a thread; `result()` once stopped."""

    thread_name = "fpmon-nvml"

    def __init__(self, index: int = 0) -> None:
        super().__init__()
        self.samples: list[int] = []
        self.error = ""
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml: Any = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        except Exception as e:  # no NVML library, no driver, no permission: say so, go on
            self._nvml = None
            self.error = f"NVML unavailable: {e}"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(int(self._nvml.nvmlDeviceGetUtilizationRates(self._handle).gpu))
            except Exception as e:
                self.error = str(e)
                return
            time.sleep(0.05)

    def __enter__(self) -> UtilSampler:
        if self._nvml is not None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def result(self) -> dict[str, Any]:
        if not self.samples:
            return {"error": self.error or "no samples"}
        return {
            "nvml_util_mean": sum(self.samples) / len(self.samples),
            "samples": len(self.samples),
        }
