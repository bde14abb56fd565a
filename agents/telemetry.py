"""Telemetry at 1 Hz: per-GPU figures from NVML, or plainly no GPUs and the host's real load.

Never invented figures: a value NVML cannot read is left out of that GPU's map (and the
failure named in `errors`), and a host without NVIDIA GPUs reports `gpus: []`, source `host`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

import msgspec

from fpmon.wire import GpuSample, HostSample, Telemetry

log = logging.getLogger("fpmon.agent.telemetry")


class HostSampler:
    """CPU and memory use from /proc (Linux)."""

    def __init__(self) -> None:
        self._last = self._cpu_times()

    @staticmethod
    def _cpu_times() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                parts = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
        return idle, sum(parts)

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"cpus": os.cpu_count() or 0}
        now = self._cpu_times()
        if now and self._last and now[1] > self._last[1]:
            d_idle, d_total = now[0] - self._last[0], now[1] - self._last[1]
            out["cpu_util"] = round(100.0 * (1 - d_idle / d_total), 2)
        self._last = now
        try:
            mem: dict[str, int] = {}
            with open("/proc/meminfo") as f:
                for line in f:
                    k, v = line.split(":", 1)
                    mem[k] = int(v.split()[0]) * 1024
            out["mem_total"] = mem["MemTotal"]
            out["mem_used"] = mem["MemTotal"] - mem.get("MemAvailable", mem.get("MemFree", 0))
        except (OSError, ValueError, KeyError):
            pass
        with contextlib.suppress(OSError):
            out["load1"] = os.getloadavg()[0]
        return out


class NvmlSampler:
    """NVML via `pynvml` (shipped by nvidia-ml-py). Raises at init when there is no driver."""

    def __init__(self) -> None:
        import pynvml

        self.nv = pynvml
        pynvml.nvmlInit()
        self.handles = [
            pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())
        ]
        self.xid = [0] * len(self.handles)
        self.last_xid: list[int | None] = [None] * len(self.handles)
        self.events = None
        try:
            # XID errors arrive as events; counted between samples, never polled from a guess.
            self.events = pynvml.nvmlEventSetCreate()
            for h in self.handles:
                pynvml.nvmlDeviceRegisterEvents(
                    h, pynvml.nvmlEventTypeXidCriticalError, self.events
                )
        except pynvml.NVMLError as e:
            log.warning("NVML XID events unavailable", extra={"fields": {"error": str(e)}})
            self.events = None

    def _drain_xid(self) -> None:
        if self.events is None:
            return
        nv = self.nv
        uuids = [nv.nvmlDeviceGetUUID(h) for h in self.handles]
        while True:
            try:
                ev = nv.nvmlEventSetWait_v2(self.events, 0)
            except nv.NVMLError:
                return  # timeout: no pending events
            for i, u in enumerate(uuids):
                if nv.nvmlDeviceGetUUID(ev.device) == u:
                    self.xid[i] += 1
                    self.last_xid[i] = int(ev.eventData)

    def sample(self) -> list[dict[str, Any]]:
        nv = self.nv
        self._drain_xid()
        gpus = []
        for i, h in enumerate(self.handles):
            g: dict[str, Any] = {"index": i}
            errors: dict[str, str] = {}

            def read(
                name: str, fn: Any, g: dict[str, Any] = g, errors: dict[str, str] = errors
            ) -> None:
                try:
                    g[name] = fn()
                except nv.NVMLError as e:
                    errors[name] = str(e)

            read("uuid", lambda h=h: nv.nvmlDeviceGetUUID(h))
            read("name", lambda h=h: nv.nvmlDeviceGetName(h))
            read("util", lambda h=h: nv.nvmlDeviceGetUtilizationRates(h).gpu)
            read("mem_util", lambda h=h: nv.nvmlDeviceGetUtilizationRates(h).memory)
            read("mem_used", lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).used)
            read("mem_total", lambda h=h: nv.nvmlDeviceGetMemoryInfo(h).total)
            read("power_w", lambda h=h: nv.nvmlDeviceGetPowerUsage(h) / 1000.0)
            read("sm_clock_mhz", lambda h=h: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM))
            read("temp_c", lambda h=h: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU))
            read("procs", lambda h=h: len(nv.nvmlDeviceGetComputeRunningProcesses(h)))
            g["xid_errors"] = self.xid[i]
            if self.last_xid[i] is not None:
                g["last_xid"] = self.last_xid[i]
            if errors:
                g["errors"] = errors
            gpus.append(g)
        return gpus


class TelemetrySource:
    def __init__(self, node: str) -> None:
        self.node = node
        self.host = HostSampler()
        self.nvml: NvmlSampler | None = None
        self.why_no_gpu = ""
        try:
            self.nvml = NvmlSampler()
            if not self.nvml.handles:
                self.why_no_gpu, self.nvml = "NVML found no GPUs", None
        except Exception as e:  # no driver / no library: say so, invent nothing
            self.why_no_gpu = f"NVML unavailable: {e}"

    def sample(self) -> Telemetry:
        # Through the wire types, so a figure out of the schema's bounds fails here, loudly,
        # rather than at every subscriber.
        host = msgspec.convert(self.host.sample(), HostSample)
        if self.nvml is None:
            host = msgspec.structs.replace(host, note=self.why_no_gpu)
            return Telemetry(node=self.node, t=time.time(), gpus=[], host=host, source="host")
        gpus = [msgspec.convert(g, GpuSample) for g in self.nvml.sample()]
        return Telemetry(node=self.node, t=time.time(), gpus=gpus, host=host, source="nvml")
