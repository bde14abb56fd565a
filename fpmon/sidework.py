"""Work hidden beside the declared work: other CUDA streams, another process, memory pressure.

A `SideWork` keeps one kind of kernel going on its own CUDA stream at a duty cycle (light 10%,
medium 50%, heavy: back to back, two in flight), optionally only while the declared work is in
a given phase (prefill or decode). The process variant runs the same loop in a child process
(its own CUDA context, time-sliced by the driver rather than sharing SMs like streams do).
Run as `python -m fpmon.sidework KIND DUTY` for that child.

On a CPU device the same loop runs plain (no stream: each op returns when done) with smaller
operands, so that one op is milliseconds and the duty cycle is a share of wall time: the
CPU-only demo's hidden-work node (agents/redteam.py) runs it inside its engine process.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

from fpmon.loop import BackgroundLoop

DUTIES = {"light": 0.1, "medium": 0.5, "heavy": 1.0}
KINDS = ("compute", "memory")


def duty_of(intensity: str | float) -> float:
    """A named intensity (light, medium, heavy) or a duty cycle in (0, 1]."""
    if isinstance(intensity, str) and intensity in DUTIES:
        return DUTIES[intensity]
    try:
        duty = float(intensity)
    except ValueError:
        raise ValueError(
            f"intensity {intensity!r}: use {', '.join(DUTIES)} or a duty cycle in (0, 1]"
        ) from None
    if not 0 < duty <= 1:
        raise ValueError(f"duty cycle {duty} is outside (0, 1]")
    return duty


@dataclass(frozen=True)
class Load:
    """One hidden-work condition."""

    kind: str = "none"  # none | compute | memory
    intensity: str = "heavy"  # light | medium | heavy
    phase: str = "all"  # all | prefill | decode
    mode: str = "stream"  # stream | process
    pressure: bool = False  # hold most free GPU memory during the run

    def label(self) -> str:
        if self.kind == "none":
            base = "none"
        else:
            base = f"{'proc-' if self.mode == 'process' else ''}{self.kind[0]}-{self.intensity}"
            if self.phase != "all":
                base += f"@{self.phase}"
        if self.pressure:
            base = "pressure" if self.kind == "none" else f"pressure+{base}"
        return base

    def to_map(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "intensity": self.intensity,
            "phase": self.phase,
            "mode": self.mode,
            "pressure": self.pressure,
        }


def _make_op(kind: str, device: Any) -> tuple[Callable[[], object], float, str]:
    """The side kernel and its work per call (FLOP or bytes moved) with the unit."""
    import torch

    cuda = torch.device(device).type == "cuda"
    # On the CPU: float32 (bf16 GEMMs are slow without AMX) and sizes that take milliseconds
    # per op, so a thread can keep a duty cycle; 64 MiB copies are still far beyond L3.
    dtype = torch.bfloat16 if cuda else torch.float32
    if kind == "compute":
        n = 8192 if cuda else 512
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        c = torch.empty(n, n, device=device, dtype=dtype)
        return (lambda: torch.mm(a, b, out=c)), 2.0 * n**3, "FLOP"
    if kind == "memory":
        # 1 GiB of bf16 each way on a GPU: far beyond L2, so HBM bandwidth bound
        n = 1 << 29 if cuda else 1 << 24
        src = torch.randn(n, device=device, dtype=dtype)
        dst = torch.empty_like(src)
        return (lambda: dst.copy_(src)), 2.0 * n * src.element_size(), "B"
    raise ValueError(f"unknown side-work kind {kind!r}")


class SideWork(BackgroundLoop):
    """Side kernels from a thread, gated by `active()`: on their own CUDA stream, or plain on
    the CPU."""

    thread_name = "fpmon-sidework"

    def __init__(
        self,
        kind: str,
        intensity: str | float,
        device: Any,
        active: Callable[[], bool] | None = None,
    ) -> None:
        import torch

        super().__init__()
        self.kind = kind
        self.duty = duty_of(intensity)
        self.device = torch.device(device)
        self.active = active or (lambda: True)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        with self._on_stream():
            self._op, self.work, self.unit = _make_op(kind, self.device)
            for _ in range(3):
                self._op()
        self._sync()
        t0 = time.perf_counter()
        with self._on_stream():
            for _ in range(5):
                self._op()
        self._sync()
        self.op_s = (time.perf_counter() - t0) / 5
        self.calls = 0
        self.busy_s = 0.0

    def _on_stream(self) -> AbstractContextManager[Any]:
        import torch

        if self.stream is None:
            return nullcontext()
        # The stream context first reads the *current* device's stream: without the device
        # switch, side work on cuda:1 opened a context on GPU 0 as well (0.54 GB on the H200,
        # and rightly a foreign_process on the node of GPU 0).
        stack = ExitStack()
        stack.enter_context(torch.cuda.device(self.device))
        stack.enter_context(torch.cuda.stream(self.stream))
        return stack

    def _sync(self) -> None:
        if self.stream is not None:
            self.stream.synchronize()

    def rate(self) -> float:
        """Unloaded throughput of the side kernel (FLOP/s or B/s)."""
        return self.work / self.op_s

    def _loop(self) -> None:
        if self.stream is None:
            self._cpu_loop()
        else:
            self._cuda_loop()

    def _cpu_loop(self) -> None:
        # Each op's own wall time sets the pause, so the thread computes `duty` of the wall
        # time however contended the cores are (torch releases the GIL inside the op).
        rest = (1 - self.duty) / self.duty
        while not self._stop.is_set():
            if not self.active():
                time.sleep(0.0002)
                continue
            t0 = time.perf_counter()
            self._op()
            took = time.perf_counter() - t0
            self.calls += 1
            self.busy_s += took
            if rest > 0:
                self._stop.wait(took * rest)

    def _cuda_loop(self) -> None:
        import torch

        torch.cuda.set_device(self.device)  # this thread's current device (see _on_stream)
        pending: list[Any] = []
        pause = self.op_s * (1 - self.duty) / self.duty
        while not self._stop.is_set():
            if not self.active():
                time.sleep(0.0002)
                continue
            with self._on_stream():
                self._op()
                ev = torch.cuda.Event()
                ev.record(self.stream)
            pending.append(ev)
            self.calls += 1
            if len(pending) >= 2:
                pending.pop(0).synchronize()  # releases the GIL while waiting
            if pause > 0:
                time.sleep(pause)
        for ev in pending:
            ev.synchronize()

    def __enter__(self) -> SideWork:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._sync()


class SideProcess:
    """The same loop in a child process (another CUDA context on the same GPU)."""

    def __init__(self, kind: str, intensity: str | float, device: str) -> None:
        self.args = [sys.executable, "-m", "fpmon.sidework", kind, str(intensity), device]
        self.proc: subprocess.Popen[str] | None = None
        self.info = ""

    def __enter__(self) -> SideProcess:
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.info = self.proc.stdout.readline().strip()  # "ready ..." once its kernels run
        if not self.info.startswith("ready"):
            self.__exit__()
            raise RuntimeError(f"side-work process did not start: {self.info or 'no output'}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()  # the child stops when its stdin closes
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class MemoryPressure:
    """Hold all but `spare_gib` of the GPU's free memory for the duration."""

    def __init__(self, device: Any, spare_gib: float = 4.0) -> None:
        self.device = device
        self.spare = int(spare_gib * (1 << 30))
        self.held = 0
        self._hog: Any = None

    def __enter__(self) -> MemoryPressure:
        import torch

        free, _total = torch.cuda.mem_get_info(self.device)
        self.held = max(free - self.spare, 0)
        if self.held:
            self._hog = torch.empty(self.held, dtype=torch.uint8, device=self.device)
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        self._hog = None
        torch.cuda.empty_cache()


def _child(kind: str, intensity: str, device: str) -> None:
    work = SideWork(kind, intensity, device)
    print(f"ready {kind} {intensity} rate={work.rate():.4g} {work.unit}/s", flush=True)
    with work:
        sys.stdin.read()  # until the parent closes our stdin


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], sys.argv[3])
