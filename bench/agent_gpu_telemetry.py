"""On a GPU host: a real agent process serves one request on CUDA and its raw telemetry frame
is printed (NVML figures per GPU), with the cost of one NVML sample.

    python bench/agent_gpu_telemetry.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import msgpack
import zmq

from fpmon.agents.client import submit
from fpmon.agents.telemetry import TelemetrySource
from fpmon.testing.spawn import AgentProcess, write_config


def main() -> int:
    src = TelemetrySource("probe")
    t0 = time.perf_counter()
    n = 20
    for _ in range(n):
        src.sample()
    print(
        f"one telemetry sample: {(time.perf_counter() - t0) / n * 1e3:.2f} ms "
        f"(source {src.sample().source})"
    )
    with tempfile.TemporaryDirectory() as d:
        cfg = write_config(Path(d), "gpu-node", engine={"device": "cuda"})
        with AgentProcess(cfg) as a:
            sub = zmq.Context.instance().socket(zmq.SUB)
            sub.setsockopt(zmq.SUBSCRIBE, b"telemetry")
            sub.connect(a.endpoints["publish"])
            r = submit(a.endpoints["intake"], "Hello from the GPU", 16, 120)
            print(f"submit: {r.status} seq {r.seq} setup {a.read_status()['setup']}")
            _topic, payload = sub.recv_multipart()
            tel = msgpack.unpackb(payload, raw=False)
            print(json.dumps(tel, indent=1, default=str)[:3000])
            sub.close(0)
    return 0 if tel["gpus"] else 1


if __name__ == "__main__":
    sys.exit(main())
