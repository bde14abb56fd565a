"""NVML GPU Performance Monitoring (GPM): what the GPU's units did between two samples.

NVML's plain utilisation (`nvmlDeviceGetUtilizationRates().gpu`) is the share of time *any*
kernel ran: a launch-bound decode already shows 20-35%, and a second process of heavy matrix
work beside it moved that figure only to ~53% on an H200 (issue 13). GPM (Hopper and newer,
`nvmlGpmMetricsGet`) says what the SMs, the tensor pipes and DRAM did: the same hidden work
moved tensor-pipe utilisation from ~2% to ~46%. GPM is device-wide (every process on the GPU).

`GpmReader` keeps two NVML GPM samples per GPU and reports the metrics between the previous
call and this one. Where GPM is not supported it says why and reports nothing: a figure the GPU
did not return is absent, never 0. `nv` is the `pynvml` module (or a stand-in in tests).
"""

from __future__ import annotations

import contextlib
import re
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

# GpmMetrics field -> the NVML_GPM_METRIC_* constant's name (resolved on the module given).
METRICS = {
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


def gpm_support(nv: Any, handle: Any) -> str:
    """`ok`, or `unsupported: <why>` (old nvidia-ml-py, old driver, a GPU before Hopper)."""
    if not hasattr(nv, "nvmlGpmQueryDeviceSupport"):
        return "unsupported: this nvidia-ml-py has no GPM API (nvmlGpmQueryDeviceSupport)"
    try:
        support = nv.nvmlGpmQueryDeviceSupport(handle)
    except nv.NVMLError as e:
        return f"unsupported: nvmlGpmQueryDeviceSupport failed: {e}"
    if not getattr(support, "isSupportedDevice", 0):
        return "unsupported: nvmlGpmQueryDeviceSupport says no (GPM needs Hopper or newer)"
    return "ok"


class GpmReader:
    """GPM metrics of one GPU between consecutive `read()` calls."""

    def __init__(self, nv: Any, handle: Any) -> None:
        self.nv, self.handle = nv, handle
        self.status = gpm_support(nv, handle)
        self._prev: Any = None
        self._prev_t = 0.0
        self._spare: Any = None
        self._have_prev = False
        self.ids: dict[str, int] = {}
        if self.status != "ok":
            return
        self.ids = {k: getattr(nv, c) for k, c in METRICS.items() if hasattr(nv, c)}
        try:
            self._prev, self._spare = nv.nvmlGpmSampleAlloc(), nv.nvmlGpmSampleAlloc()
        except nv.NVMLError as e:
            self.status = f"error: nvmlGpmSampleAlloc failed: {e}"

    def read(self) -> tuple[dict[str, Any] | None, str]:
        """(GpmMetrics as a map, "ok") between the last call and now; (None, why) otherwise."""
        if self.status != "ok":
            return None, self.status
        nv = self.nv
        cur = self._spare
        try:
            nv.nvmlGpmSampleGet(self.handle, cur)
        except nv.NVMLError as e:
            self._have_prev = False
            return None, f"error: nvmlGpmSampleGet failed: {e}"
        now = time.monotonic()
        prev, prev_t, had = self._prev, self._prev_t, self._have_prev
        self._prev, self._spare, self._prev_t, self._have_prev = cur, prev, now, True
        if not had:
            return None, "first sample: GPM needs two samples an interval apart"
        if now - prev_t <= 0:
            return None, "error: no time between GPM samples"
        try:
            values = self._metrics(prev, cur)
        except nv.NVMLError as e:
            return None, f"error: nvmlGpmMetricsGet failed: {e}"
        return {"interval_s": round(now - prev_t, 4), **values}, "ok"

    def _metrics(self, s1: Any, s2: Any) -> dict[str, float]:
        nv = self.nv
        names = list(self.ids)
        mg = nv.c_nvmlGpmMetricsGet_t()
        mg.version = nv.NVML_GPM_METRICS_GET_VERSION
        mg.numMetrics = len(names)
        mg.sample1, mg.sample2 = s1, s2
        for i, name in enumerate(names):
            mg.metrics[i].metricId = self.ids[name]
        nv.nvmlGpmMetricsGet(mg)
        out = {}
        for i, name in enumerate(names):
            m = mg.metrics[i]
            if m.nvmlReturn == nv.NVML_SUCCESS:  # a metric this GPU does not have stays absent
                out[name] = round(float(m.value), 4)
        return out

    def close(self) -> None:
        for s in (self._prev, self._spare):
            if s is not None:
                with contextlib.suppress(Exception):  # shutting down: nothing to report to
                    self.nv.nvmlGpmSampleFree(s)
        self._prev = self._spare = None
        self.status = "closed"


# --- which GPUs are the engine's --------------------------------------------------------------
def engine_gpus(
    device: str | None,
    uuids: list[str],
    env: Mapping[str, str],
    runtime_uuid: Callable[[int], str | None] | None = None,
) -> tuple[list[int], str]:
    """NVML indices of the GPUs the engine uses, and a sentence saying how they were found.

    `uuids` are NVML's, by NVML index. `runtime_uuid(i)`, when the engine's CUDA runtime is up,
    gives logical device i's UUID: the authority. Otherwise `CUDA_VISIBLE_DEVICES` maps the
    logical index (entries are NVML indices or UUID prefixes). `device` None: every GPU of the
    host (tools, not agents)."""
    if device is None:
        return list(range(len(uuids))), "every GPU of the host (no engine device given)"
    if not device.startswith("cuda"):
        return [], f"engine device {device}: the engine uses no GPU of this host"
    m = re.fullmatch(r"cuda(?::(\d+))?", device)
    if m is None:
        return [], f"engine device {device!r}: not understood, no GPU reported"
    logical = int(m.group(1) or 0)
    if runtime_uuid is not None:
        u = runtime_uuid(logical)
        if u:
            u = u if u.startswith("GPU-") else f"GPU-{u}"
            if u in uuids:
                i = uuids.index(u)
                return [i], f"engine device {device} -> {u} (NVML index {i}, from the CUDA runtime)"
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        entry, how = str(logical), "CUDA_VISIBLE_DEVICES unset"
    else:
        entries = [e.strip() for e in visible.split(",") if e.strip()]
        if logical >= len(entries):
            return [], f"engine device {device} is not visible (CUDA_VISIBLE_DEVICES={visible})"
        entry, how = entries[logical], f"CUDA_VISIBLE_DEVICES={visible}"
    if entry.isdigit():
        i = int(entry)
        if i >= len(uuids):
            return [], f"engine device {device} -> index {i} ({how}): NVML has no such GPU"
        order = env.get("CUDA_DEVICE_ORDER", "FASTEST_FIRST")
        caveat = "" if order == "PCI_BUS_ID" else "; CUDA_DEVICE_ORDER is not PCI_BUS_ID"
        return [i], f"engine device {device} -> {uuids[i]} (NVML index {i}, {how}{caveat})"
    if entry.startswith("GPU-"):
        hits = [i for i, u in enumerate(uuids) if u.startswith(entry)]
        if len(hits) == 1:
            return hits, f"engine device {device} -> {uuids[hits[0]]} ({how})"
        return [], f"engine device {device}: {entry} matches {len(hits)} GPUs ({how})"
    return [], f"engine device {device}: {entry} ({how}) is not resolved (MIG is not supported)"


def torch_runtime_uuid(logical: int) -> str | None:
    """The UUID of CUDA device `logical` from torch, only when the engine already started CUDA
    in this process (never initialises CUDA from the telemetry thread)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        if not torch.cuda.is_initialized():
            return None
        return str(torch.cuda.get_device_properties(logical).uuid)
    except Exception:
        return None
