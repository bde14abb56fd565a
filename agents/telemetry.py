"""Telemetry at 1 Hz: the node's own GPUs from NVML (and GPM), or plainly no GPUs.

Only the GPUs the agent's engine uses are reported, found by UUID from the engine's device and
`CUDA_VISIBLE_DEVICES` (`engine_gpus`): summing every GPU of the host charged every node on it
with every GPU's work (issue 13). Per GPU: NVML utilisation and memory, GPM metrics where
`nvmlGpmQueryDeviceSupport` says yes (`fpmon/gpm.py`), and every compute process on it, marked
as the engine's (the agent's process or a child) or not. Also, on every host, the engine
process's own CPU time: hidden work inside the engine process shows there without a GPU.

Never invented figures: a value NVML cannot read is left out (and the failure named in
`errors`); one outside the wire bounds (negative, NaN, over 100%) is dropped and named too,
so one bad sensor does not cost the whole sample. A host without NVIDIA GPUs, or an engine on
the CPU, reports `gpus: []`, source `host`, and says why in `scope`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import msgspec

from fpmon.gpm import GpmReader, engine_gpus, torch_runtime_uuid
from fpmon.wire import GpuSample, HostSample, ProcessSample, Telemetry

log = logging.getLogger("fpmon.agent.telemetry")
T = TypeVar("T")


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


# --- which processes are the engine's ---------------------------------------------------------
def _psutil() -> Any:
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def engine_pids(root: int) -> set[int]:
    """`root` and its live descendants (vLLM's worker processes, for one)."""
    ps = _psutil()
    if ps is not None:
        try:
            return {root, *(c.pid for c in ps.Process(root).children(recursive=True))}
        except ps.Error:
            return {root}
    parents: dict[int, int] = {}  # /proc fallback: ppid of every visible process
    for d in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if d.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{d}/stat") as f:
                parents[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
    out, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parents.items() if pp == p and c not in out]
        out.update(kids)
        frontier += kids
    return out


def process_name(pid: int) -> str | None:
    """The process's short name where this agent can see it; None if not (gone, another pid
    namespace: NVML reports the host's pids, a container sees its own)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()[:256] or None
    except OSError:
        return None


def pid_visible(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


class EngineProcess:
    """CPU time, memory and threads of the engine's process tree (psutil, else os.times)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._last: tuple[float, float] | None = None  # (cpu_s, monotonic)

    def sample(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pid": self.pid}
        ps = _psutil()
        cpu_s: float | None = None
        if ps is not None:
            try:
                root = ps.Process(self.pid)
                kids = root.children(recursive=True)
                cpu_s, rss, threads = 0.0, 0, 0
                for p in (root, *kids):
                    with contextlib.suppress(ps.Error), p.oneshot():
                        t = p.cpu_times()
                        cpu_s += t.user + t.system
                        rss += p.memory_info().rss
                        threads += p.num_threads()
                out.update(children=len(kids), rss=rss, threads=threads, note="psutil")
            except ps.Error as e:
                out["note"] = f"psutil: {type(e).__name__}"
        elif self.pid == os.getpid():
            t = os.times()
            cpu_s = t.user + t.system
            out["note"] = "os.times: this process only (install psutil for children and memory)"
        else:
            out["note"] = "not measured: psutil is not installed"
        if cpu_s is not None:
            out["cpu_s"] = round(cpu_s, 3)
            now = time.monotonic()
            last, self._last = self._last, (cpu_s, now)
            # A child that exited takes its CPU time with it: no rate for that interval.
            if last is not None and now > last[1] and cpu_s >= last[0]:
                out["cpu_util"] = round(100.0 * (cpu_s - last[0]) / (now - last[1]), 2)
        return out


# --- NVML -------------------------------------------------------------------------------------
class NvmlSampler:
    """NVML via `pynvml` (shipped by nvidia-ml-py), for the GPUs `indices` (None: all).
    Raises at init when there is no driver."""

    def __init__(
        self,
        indices: list[int] | None = None,
        engine_pid: int | None = None,
        gpm: bool = True,
        nv: Any = None,
    ) -> None:
        if nv is None:
            import pynvml

            nv = pynvml
        self.nv = nv
        nv.nvmlInit()
        count = nv.nvmlDeviceGetCount()
        self.indices = list(range(count)) if indices is None else [i for i in indices if i < count]
        self.handles = [nv.nvmlDeviceGetHandleByIndex(i) for i in self.indices]
        self.engine_pid = os.getpid() if engine_pid is None else engine_pid
        # Other processes that are the engine too: an operator's vLLM server's workers, whose
        # GPU processes are not this agent's descendants (`TelemetrySource.also_engine`).
        self.more_engine: Callable[[], Iterable[int]] = tuple
        self.gpm = [GpmReader(nv, h) if gpm else None for h in self.handles]
        self.xid = [0] * len(self.handles)
        self.last_xid: list[int | None] = [None] * len(self.handles)
        self.events = None
        if not self.handles:
            return
        try:
            # XID errors arrive as events; counted between samples, never polled from a guess.
            self.events = nv.nvmlEventSetCreate()
            for h in self.handles:
                nv.nvmlDeviceRegisterEvents(h, nv.nvmlEventTypeXidCriticalError, self.events)
        except nv.NVMLError as e:
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

    def _processes(self, h: Any, engine: set[int]) -> list[dict[str, Any]]:
        procs = self.nv.nvmlDeviceGetComputeRunningProcesses(h)
        out: list[dict[str, Any]] = []
        for p in procs:
            pid = int(p.pid)
            mem = getattr(p, "usedGpuMemory", None)
            out.append(
                {
                    "pid": pid,
                    "used_memory": None if mem is None else int(mem),
                    "name": process_name(pid),
                    "engine": pid in engine,
                }
            )
        if (
            out
            and not any(p["engine"] for p in out)
            and not any(pid_visible(p["pid"]) for p in out)
        ):
            # NVML speaks the host's pids; none of these exists here: this agent runs in
            # another pid namespace (a container) and cannot tell which process is its own.
            for p in out:
                p["engine"] = None
        return out

    def sample(self) -> list[GpuSample]:
        nv = self.nv
        self._drain_xid()
        engine = engine_pids(self.engine_pid)
        for pid in self.more_engine():
            engine |= engine_pids(pid)
        gpus: list[GpuSample] = []
        for i, h in enumerate(self.handles):
            g: dict[str, Any] = {"index": self.indices[i]}
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
            read("processes", lambda h=h: self._processes(h, engine))
            if "processes" in g:
                g["procs"] = len(g["processes"])
            reader = self.gpm[i]
            if reader is None:
                g["gpm_status"] = "off: GPM sampling disabled in the agent's configuration"
            else:
                metrics, g["gpm_status"] = reader.read()
                if metrics is not None:
                    g["gpm"] = metrics
            g["xid_errors"] = self.xid[i]
            if self.last_xid[i] is not None:
                g["last_xid"] = self.last_xid[i]
            gpus.append(_fit(GpuSample, g, errors))
        return gpus

    def close(self) -> None:
        for r in self.gpm:
            if r is not None:
                r.close()


_PATH = re.compile(r"at `\$((?:\.\w+|\[\d+\])*)`")


def _fit(cls: type[T], m: dict[str, Any], errors: dict[str, str]) -> T:
    """`m` through the wire type's bounds; each figure out of bounds is dropped and named in
    `errors` rather than failing the whole sample (one bad sensor must not blind the rest)."""
    has_errors = "errors" in getattr(cls, "__struct_fields__", ())
    for _ in range(64):
        if errors and has_errors:
            m["errors"] = dict(list(errors.items())[:64])
        try:
            return msgspec.convert(m, cls)
        except msgspec.ValidationError as e:
            msg = str(e)
            found = _PATH.search(msg)
            steps = re.findall(r"\.(\w+)|\[(\d+)\]", found.group(1)) if found else []
            if not steps:  # a cross-field rule (mem_used over mem_total): drop the used figure
                if "mem_used" not in m:
                    raise
                steps = [("mem_used", "")]
            parent: Any = m
            for key, idx in steps[:-1]:
                parent = parent[key] if key else parent[int(idx)]
            key, idx = steps[-1]
            where = "".join(f".{k}" if k else f"[{i}]" for k, i in steps).lstrip(".")
            errors[where] = f"refused: {msg.split(' - at ')[0]}"[:200]
            if key:
                parent.pop(key, None)
            else:
                parent.pop(int(idx))
    raise ValueError(f"{cls.__name__}: too many figures out of bounds")


class TelemetrySource:
    """What the agent publishes each second. `device`: the engine's (None: every GPU of the
    host, for tools); `engine_pid`: the engine's process (default: this one, which hosts it)."""

    def __init__(
        self,
        node: str,
        device: str | None = None,
        *,
        engine_pid: int | None = None,
        gpm: bool = True,
        nv: Any = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.node = node
        self.host = HostSampler()
        self.engine = EngineProcess(os.getpid() if engine_pid is None else engine_pid)
        self.nvml: NvmlSampler | None = None
        self.why_no_gpu = ""
        self.scope = ""
        if device is not None and not device.startswith("cuda"):
            self.why_no_gpu = self.scope = engine_gpus(device, [], {})[1]
            return
        try:
            if nv is None:
                import pynvml

                nv = pynvml
            nv.nvmlInit()
            uuids = [
                nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))
                for i in range(nv.nvmlDeviceGetCount())
            ]
            if not uuids:
                self.why_no_gpu = self.scope = "NVML found no GPUs"
            else:
                indices, self.scope = engine_gpus(
                    device, uuids, os.environ if env is None else env, torch_runtime_uuid
                )
                if indices:
                    self.nvml = NvmlSampler(indices, engine_pid, gpm=gpm, nv=nv)
                else:
                    self.why_no_gpu = self.scope
        except Exception as e:  # no driver / no library: say so, invent nothing
            self.why_no_gpu = f"NVML unavailable: {e}"
            self.scope = f"no GPU: {self.why_no_gpu}"

    def also_engine(self, pids: Callable[[], Iterable[int]]) -> None:
        """Count the processes `pids()` names (read at every sample) and their children as the
        engine's on the node's GPUs: in sidecar mode the model runs in the operator's vLLM
        server, whose GPU processes would otherwise be reported as foreign to the engine — a
        `foreign_process` accusation of an honest node."""
        if self.nvml is not None:
            self.nvml.more_engine = pids

    def sample(self) -> Telemetry:
        host_errors: dict[str, str] = {}
        host = _fit(HostSample, self.host.sample(), host_errors)
        eng_errors: dict[str, str] = {}
        eng = _fit(ProcessSample, self.engine.sample(), eng_errors)
        if eng_errors:
            eng = msgspec.structs.replace(eng, note=f"{eng.note}; {eng_errors}"[:4096])
        note = "; ".join(x for x in (self.why_no_gpu, str(host_errors) if host_errors else "") if x)
        if note:
            host = msgspec.structs.replace(host, note=note[:4096])
        if self.nvml is None:
            return Telemetry(
                node=self.node,
                t=time.time(),
                gpus=[],
                host=host,
                source="host",
                scope=self.scope,
                engine=eng,
            )
        return Telemetry(
            node=self.node,
            t=time.time(),
            gpus=self.nvml.sample(),
            host=host,
            source="nvml",
            scope=self.scope,
            engine=eng,
        )

    def close(self) -> None:
        if self.nvml is not None:
            self.nvml.close()
