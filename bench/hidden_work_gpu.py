"""Hidden work beside a launch-bound decode: what NVML, GPM and the process list see (issue 13).

On a host with two GPUs: a serving engine process on each (HF engine, batch-1 decode, the
`random:qwen2.5-1.5b` preset by default), the node GPU and a control GPU. The agent's own
telemetry code (`agents.telemetry.TelemetrySource`, scoped to each engine's GPU and pid)
samples both at 1 Hz while, on the node GPU only, a side process (`fpmon.sidework`: bf16
8192^3 matmuls, or 1 GiB copies) runs phase by phase: quiet, compute at 10%, 50%, 100% duty,
memory-bound at 100%, quiet again. The control engine also meters its own batches with GPM
(`fpmon.gpm.GpmReader` around each batch, as the replay daemon does around its replays): the
reference activity per token that committed tokens explain.

Writes `samples.json` (every telemetry sample and engine batch) and `summary.json` under
`--out`, and prints per phase and GPU: tokens/s, NVML util, GPM SM/occupancy/tensor/DRAM, the
foreign processes seen, and the observed/explained ratio per metric over 10 s windows.

    PYTHONPATH=. python bench/hidden_work_gpu.py --out /tmp/hidden [--phase-s 20]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

METRICS = ("util", "sm_util", "sm_occupancy", "tensor_util", "dram_bw_util")
PROMPT = "Inference nodes commit to their activations; a verifier replays a secret sample."


def engine_main(args: argparse.Namespace) -> int:
    """A serving engine: batch-1 requests back to back until stdin closes; one JSON line per
    batch (tokens, seconds, and with --meter the GPM activity over that batch)."""
    import torch

    from fpmon.engines.base import BatchRequest
    from fpmon.engines.hf import HFEngine

    torch.set_num_threads(4)
    engine = HFEngine(args.model, dtype="bfloat16", device=args.device)
    req = BatchRequest(
        rows=[engine.encode(PROMPT)], decode_steps=args.tokens - 1, probe_rows=[], probes=None
    )
    reader = None
    if args.meter:
        import pynvml

        from fpmon.gpm import GpmReader, engine_gpus, torch_runtime_uuid

        pynvml.nvmlInit()
        n = pynvml.nvmlDeviceGetCount()
        uuids = [pynvml.nvmlDeviceGetUUID(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(n)]
        engine.run_batch(req)  # CUDA up: the runtime names the device's UUID
        idx, scope = engine_gpus(args.device, uuids, os.environ, torch_runtime_uuid)
        reader = GpmReader(pynvml, pynvml.nvmlDeviceGetHandleByIndex(idx[0]))
        print(json.dumps({"meter": scope, "gpm": reader.status}), flush=True)
    for _ in range(2):
        engine.run_batch(req)
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    print(json.dumps({"ready": args.device, "pid": os.getpid()}), flush=True)
    while not stop.is_set():
        if reader is not None:
            reader.read()
        t0 = time.perf_counter()
        engine.run_batch(req)
        dt = time.perf_counter() - t0
        line: dict[str, Any] = {"t": time.time(), "tokens": args.tokens, "s": round(dt, 5)}
        if reader is not None:
            line["gpm"], _status = reader.read()
        print(json.dumps(line), flush=True)
    return 0


class Engine:
    def __init__(self, device: str, model: str, tokens: int, meter: bool) -> None:
        cmd = [sys.executable, __file__, "engine", "--device", device, "--model", model]
        cmd += ["--tokens", str(tokens)] + (["--meter"] if meter else [])
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.device = device
        self.batches: list[dict[str, Any]] = []
        self.info: dict[str, Any] = {}
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = json.loads(line)
            if "tokens" in m:
                self.batches.append(m)
            else:
                self.info.update(m)
                if "ready" in m:
                    self.ready.set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


class DrySide:
    def __init__(self, kind: str, duty: str, device: str) -> None:
        self.info = f"dry {kind} {duty}"

    def __enter__(self) -> DrySide:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def observed(sample: dict[str, Any], metric: str) -> float | None:
    """% for one metric from one GPU sample (NVML util or a GPM figure)."""
    if metric == "util":
        return sample.get("util")
    return (sample.get("gpm") or {}).get(metric)


def summarise(samples: list[dict[str, Any]], batches: list[dict[str, Any]], t0: float, t1: float):
    inside = [s for s in samples if t0 <= s["t"] < t1]
    out: dict[str, Any] = {"samples": len(inside)}
    for m in (*METRICS, "tensor_hmma_util", "graphics_util"):
        vals = [v for s in inside if (v := observed(s["gpu"], m)) is not None]
        out[m] = round(statistics.mean(vals), 2) if vals else None
    tok = sum(b["tokens"] for b in batches if t0 <= b["t"] < t1)
    out["tokens_per_s"] = round(tok / (t1 - t0), 1)
    foreign: dict[int, Any] = {}
    for s in inside:
        for p in s["gpu"].get("processes") or []:
            if p.get("engine") is False:
                foreign[p["pid"]] = (p.get("name"), p.get("used_memory"))
    out["foreign"] = [{"pid": k, "name": v[0], "used_memory": v[1]} for k, v in foreign.items()]
    out["engine_procs_seen"] = sorted(
        {p["pid"] for s in inside for p in s["gpu"].get("processes") or [] if p.get("engine")}
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd")
    e = sub.add_parser("engine")
    e.add_argument("--device", required=True)
    e.add_argument("--model", default="random:qwen2.5-1.5b")
    e.add_argument("--tokens", type=int, default=32)
    e.add_argument("--meter", action="store_true")
    ap.add_argument("--model", default="random:qwen2.5-1.5b")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--node-gpu", type=int, default=0)
    ap.add_argument("--control-gpu", type=int, default=1)
    ap.add_argument("--phase-s", type=float, default=20.0)
    ap.add_argument("--window-s", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("hidden-work"))
    ap.add_argument(
        "--dry-run",
        action="store_true",
        help="CPU check of this script: tiny "
        "model on the CPU, a stand-in NVML, a sleeping side process",
    )
    args = ap.parse_args()
    if args.cmd == "engine":
        return engine_main(args)
    from fpmon.agents.telemetry import TelemetrySource
    from fpmon.sidework import SideProcess

    args.out.mkdir(parents=True, exist_ok=True)
    node_dev, ctl_dev = f"cuda:{args.node_gpu}", f"cuda:{args.control_gpu}"
    nv = None
    if args.dry_run:
        from fpmon.testing.fakenvml import FakeGpu, FakeNvml

        nv = FakeNvml([FakeGpu(f"GPU-{i}", metrics={"sm_util": 10.0 + i}) for i in range(2)])
        node = Engine("cpu", "tiny", args.tokens, meter=False)
        ctl = Engine("cpu", "tiny", args.tokens, meter=False)
        ctl.batches.append(
            {"t": 0.0, "tokens": 1, "s": 0.01, "gpm": {"interval_s": 1.0, "sm_util": 10.0}}
        )
        SideProcess = DrySide
    else:
        node = Engine(node_dev, args.model, args.tokens, meter=False)
        ctl = Engine(ctl_dev, args.model, args.tokens, meter=True)
    for eng in (node, ctl):
        if not eng.ready.wait(240):
            raise SystemExit(f"engine on {eng.device} did not start: {eng.proc.poll()}")
    env = {"CUDA_DEVICE_ORDER": "PCI_BUS_ID"}  # this process starts no CUDA: NVML order
    sources = {
        "node": TelemetrySource("node", node_dev, engine_pid=node.proc.pid, env=env, nv=nv),
        "control": TelemetrySource("control", ctl_dev, engine_pid=ctl.proc.pid, env=env, nv=nv),
    }
    print({k: s.scope for k, s in sources.items()}, ctl.info, flush=True)
    samples: dict[str, list[dict[str, Any]]] = {"node": [], "control": []}
    stop = threading.Event()
    sample_ms: list[float] = []

    def sampler() -> None:
        nxt = time.monotonic()
        while not stop.is_set():
            for name, src in sources.items():
                t0 = time.perf_counter()
                tel = src.sample().to_map()
                sample_ms.append((time.perf_counter() - t0) * 1e3)
                for g in tel["gpus"]:
                    samples[name].append({"t": tel["t"], "gpu": g, "engine": tel.get("engine")})
            nxt += 1.0
            stop.wait(max(0.0, nxt - time.monotonic()))

    th = threading.Thread(target=sampler, daemon=True)
    th.start()
    phases = [
        ("quiet", None),
        ("compute-10", ("compute", "0.1")),
        ("compute-50", ("compute", "0.5")),
        ("compute-100", ("compute", "1.0")),
        ("memory-100", ("memory", "1.0")),
        ("quiet-after", None),
    ]
    spans: list[tuple[str, float, float, str]] = []
    os.environ["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).parents[1]), *sys.path])
    try:
        for name, side in phases:
            if side is None:
                t0 = time.time()
                time.sleep(args.phase_s)
                spans.append((name, t0, time.time(), ""))
                continue
            with SideProcess(side[0], side[1], node_dev) as sp:
                time.sleep(1.0)  # let one telemetry second pass with it running
                t0 = time.time()
                time.sleep(args.phase_s)
                spans.append((name, t0, time.time(), sp.info))
            print(f"{name}: {sp.info}", flush=True)
    finally:
        stop.set()
        th.join()
        node.stop()
        ctl.stop()
    # Reference activity per token: the control engine's own batches metered with GPM.
    metered = [b for b in ctl.batches if b.get("gpm")]
    per_token = {}
    for m in METRICS[1:]:
        act = [b["gpm"][m] / 100 * b["gpm"]["interval_s"] for b in metered if m in b["gpm"]]
        toks = sum(b["tokens"] for b in metered if m in b["gpm"])
        if act and toks:
            per_token[m] = sum(act) / toks
    wall = sum(b["s"] for b in ctl.batches) / max(1, sum(b["tokens"] for b in ctl.batches))
    per_token["util"] = wall  # the verifier's bound for NVML util: reference wall time per token
    summary: dict[str, Any] = {
        "phases": {},
        "reference_per_token_s": per_token,
        "meter": ctl.info,
        "scopes": {k: s.scope for k, s in sources.items()},
        "sample_ms_median": statistics.median(sample_ms) if sample_ms else None,
    }
    for name, t0, t1, info in spans:
        summary["phases"][name] = {
            "side": info,
            "node": summarise(samples["node"], node.batches, t0, t1),
            "control": summarise(samples["control"], ctl.batches, t0, t1),
            "windows": {},
        }
        for who, eng in (("node", node), ("control", ctl)):
            ratios: dict[str, list[float]] = {m: [] for m in METRICS}
            w0 = t0
            while w0 + args.window_s <= t1 + 0.01:
                w1 = w0 + args.window_s
                tok = sum(b["tokens"] for b in eng.batches if w0 <= b["t"] < w1)
                for m in METRICS:
                    vals = [
                        v
                        for s in samples[who]
                        if w0 <= s["t"] < w1
                        if (v := observed(s["gpu"], m)) is not None
                    ]
                    obs = sum(vals) / 100 * (w1 - w0) / max(1, len(vals)) if vals else None
                    exp = tok * per_token.get(m, 0.0)
                    if obs is not None and exp > 0:
                        ratios[m].append(round(obs / exp, 3))
                w0 = w1
            summary["phases"][name]["windows"][who] = ratios
    (args.out / "samples.json").write_text(
        json.dumps(
            {
                "samples": samples,
                "node_batches": node.batches,
                "control_batches": ctl.batches,
                "spans": spans,
            }
        )
    )
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"reference per token (control GPU, GPM around its batches): {per_token}")
    head = f"{'phase':12} {'gpu':8} {'tok/s':>6} " + " ".join(f"{m[:10]:>10}" for m in METRICS)
    print(head + "  foreign processes")
    for name, ph in summary["phases"].items():
        for who in ("node", "control"):
            s = ph[who]
            vals = " ".join(
                f"{(s[m] if s[m] is not None else float('nan')):10.2f}" for m in METRICS
            )
            fp = ", ".join(f"{f['pid']} {f['name']} {f['used_memory']}" for f in s["foreign"])
            print(f"{name:12} {who:8} {s['tokens_per_s']:6.0f} {vals}  {fp}")
    print("observed/explained per 10 s window (node GPU):")
    for name, ph in summary["phases"].items():
        w = ph["windows"]["node"]
        c = ph["windows"]["control"]
        print(f"  {name:12} node " + " ".join(f"{m}={w[m]}" for m in METRICS))
        print(f"  {'':12} ctl  " + " ".join(f"{m}={c[m]}" for m in METRICS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
