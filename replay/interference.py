"""Concurrent-stream interference: replay a record while synthetic work runs on other CUDA
streams at several intensities, and record how the numerics move and how much it slows down.

Hidden work shows up in two ways at most: as non-reproducible numerics (where the lab finds
they move at all) and as time, since it competes for the same GPU. This measures both for one
record on the reference device; `explain_slowdown` then names the intensity that best explains
a node's observed slowdown. On a host without CUDA it returns a skip with the reason.

    run_interference(engine, record, intensities=(0.25, 0.5, 1.0)) -> dict
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import Any

from fpmon.compare import compare_records
from fpmon.records import Record
from fpmon.reproduce import replay_record
from replay.scoring import score

PERIOD_S = 0.01  # duty cycle of the synthetic work: busy intensity*PERIOD, idle the rest
KINDS = ("matmul", "memcpy")


def skip_reason(engine: Any) -> str:
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is false: interference tests need a CUDA device"
    if getattr(engine, "device", None) is None or engine.device.type != "cuda":
        return "the reference engine is not on a CUDA device"
    return ""


class SideWork:
    """Synthetic work on its own CUDA stream, in a thread, at a duty cycle of `intensity`."""

    def __init__(self, device: Any, kind: str, intensity: float, size: int = 4096) -> None:
        import torch

        self.torch = torch
        self.device, self.kind, self.intensity = device, kind, intensity
        self.stream = torch.cuda.Stream(device=device)
        with torch.cuda.stream(self.stream):
            if kind == "matmul":
                self.a = torch.randn(size, size, device=device, dtype=torch.bfloat16)
                self.b = torch.randn(size, size, device=device, dtype=torch.bfloat16)
            else:
                self.a = torch.empty(256 << 20, dtype=torch.uint8, device=device)
                self.b = torch.empty_like(self.a)
        self.stop_event = threading.Event()
        self.launched = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        torch = self.torch
        busy = self.intensity * PERIOD_S
        with torch.cuda.stream(self.stream):
            while not self.stop_event.is_set():
                t0 = time.perf_counter()
                while time.perf_counter() - t0 < busy:
                    if self.kind == "matmul":
                        torch.matmul(self.a, self.b)
                    else:
                        self.b.copy_(self.a)
                    self.launched += 1
                    self.stream.synchronize()
                idle = PERIOD_S - (time.perf_counter() - t0)
                if idle > 0:
                    time.sleep(idle)

    def __enter__(self) -> SideWork:
        self.thread.start()
        time.sleep(0.05)  # let it reach steady state
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop_event.set()
        self.thread.join(timeout=10)
        self.stream.synchronize()


def _timed_replays(engine: Any, record: Record, repeats: int) -> tuple[list[float], Record]:
    tokens = len(record.output_ids)
    per_token, last = [], None
    for _ in range(repeats):
        last = replay_record(engine, record)
        per_token.append(sum(last.timings.values()) / max(tokens, 1))
    assert last is not None
    return per_token, last


def run_interference(
    engine: Any,
    record: Record,
    intensities: tuple[float, ...] | list[float] = (0.25, 0.5, 1.0),
    *,
    kinds: tuple[str, ...] = KINDS,
    repeats: int = 5,
) -> dict[str, Any]:
    """Numerics movement and slowdown of one record's replay under side work."""
    reason = skip_reason(engine)
    if reason:
        return {"skipped": True, "reason": reason}
    alone, baseline = _timed_replays(engine, record, repeats)
    t_alone = statistics.median(alone)
    jitter = (max(alone) - min(alone)) / t_alone if t_alone else 0.0
    out: dict[str, Any] = {
        "skipped": False,
        "device": engine.setup.gpu_name,
        "setup": engine.setup.summary(),
        "alone": {
            "per_token_s": t_alone,
            "jitter_rel": jitter,
            "repeats": repeats,
            "matches_record": compare_records(record, baseline).identical,
        },
        "runs": [],
    }
    for kind in kinds:
        for x in intensities:
            with SideWork(engine.device, kind, float(x)) as side:
                times, rep = _timed_replays(engine, record, repeats)
            comp = compare_records(baseline, rep)
            t = statistics.median(times)
            out["runs"].append(
                {
                    "kind": kind,
                    "intensity": float(x),
                    "per_token_s": t,
                    "slowdown": t / t_alone if t_alone else 0.0,
                    "identical": comp.identical,
                    "score": score(comp),
                    "moved_probes": [p.probe for p in comp.differing()],
                    "side_launches": side.launched,
                }
            )
    return out


def explain_slowdown(profile: dict[str, Any], slowdown: float) -> dict[str, Any] | None:
    """The run of an interference profile whose slowdown is nearest to the observed one."""
    runs = profile.get("runs") or []
    if profile.get("skipped") or not runs:
        return None
    best = min(runs, key=lambda r: abs(r["slowdown"] - slowdown))
    return {
        "kind": best["kind"],
        "intensity": best["intensity"],
        "profile_slowdown": best["slowdown"],
        "observed_slowdown": slowdown,
    }
