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
from contextlib import AbstractContextManager
from typing import Any

from fpmon.compare import compare_records
from fpmon.records import Record
from fpmon.replay.scoring import score
from fpmon.reproduce import replay_record
from fpmon.sidework import SideProcess, SideWork, duty_of

# compute and memory run on another stream of this process; process runs the compute loop in a
# child process (its own CUDA context, time-sliced by the driver: the lab measured it apart).
KINDS = ("compute", "memory", "process")


def skip_reason(engine: Any) -> str:
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is false: interference tests need a CUDA device"
    if getattr(engine, "device", None) is None or engine.device.type != "cuda":
        return "the reference engine is not on a CUDA device"
    return ""


def _side(kind: str, intensity: float, device: Any) -> AbstractContextManager[Any]:
    # The lab's own side work, so the daemon's profile and the lab's findings measure the same
    # kernels (8192^3 bf16 matmuls; 1 GiB HBM copies).
    if kind == "process":
        return SideProcess("compute", intensity, str(device))
    return SideWork(kind, intensity, device)


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
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise ValueError(f"unknown side-work kind {bad[0]!r}: use {', '.join(KINDS)}")
    levels = [duty_of(x) for x in intensities]
    # A first replay pays one-time costs (cuBLAS handles, allocator growth): not timed.
    replay_record(engine, record)
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
        for x in levels:
            with _side(kind, x, engine.device):
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
