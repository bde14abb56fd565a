"""Synthetic wire traffic for tests and the load benchmark (never used by the live monitor).

Messages are real `fpmon.wire` dataclasses, so they go through the same encode/decode path as
an agent's and the replay daemon's; `Publisher` sends them from a real PUB socket.
"""

from __future__ import annotations

import random
import time
from typing import Any

import zmq

from fpmon.wire import (
    Alert,
    Candidate,
    Commit,
    Evidence,
    GpuSample,
    Message,
    ProbeEvidence,
    Telemetry,
    Verdict,
    encode,
)
from fpmon.wire.messages import AlertKind, AttributionStatus, Status

# A declared setup as an agent's commit carries it. Written out (not Setup().to_map()) so the
# snapshot tests do not change whenever the core's Setup gains a field.
DECLARED: dict[str, Any] = {
    "engine": "hf",
    "engine_version": "5.19.0",
    "torch_version": "2.13.0+cpu",
    "cuda_version": "",
    "device": "cpu",
    "gpu_name": "",
    "dtype": "float32",
    "attn_impl": "sdpa",
    "sdpa_backend": "default",
    "compiled": False,
    "batch_size": 1,
    "slot": 0,
    "tp": 1,
    "pp": 1,
    "quantization": "none",
    "extra": {},
}


def telemetry(node: str, gpus: int = 8, util: float = 50.0, t: float | None = None) -> Telemetry:
    return Telemetry(
        node=node,
        t=time.time() if t is None else t,
        gpus=[
            GpuSample(
                index=i,
                name="NVIDIA H100 80GB HBM3",
                util=util,
                mem_used=40 * 2**30,
                mem_total=80 * 2**30,
                power_w=400.0,
            )
            for i in range(gpus)
        ],
        source="nvml",
    )


def commit(node: str, seq: int, setup: dict[str, Any] | None = None) -> Commit:
    return Commit(
        node=node, t=time.time(), seq=seq, request_id=f"{node}-{seq}",
        record_digest=bytes(32), chain=bytes(32), setup=setup or DECLARED, model="tiny",
        prompt_tokens=8, output_tokens=16,
    )  # fmt: skip


def verdict(
    node: str, seq: int, status: Status = "match", field: str | None = None, value: Any = None,
    layers: int = 4,
) -> Verdict:  # fmt: skip
    attribution = []
    att_status: AttributionStatus = ""
    att_note = ""
    rels = [0.0] * layers
    if status == "mismatch":
        att_status, att_note = "exact", f"reproduced bit-exactly by {field}={value}"
        # The replay daemon's shape (replay/attribution.py): nearest candidate first.
        attribution = [
            Candidate(field=str(field), changes={str(field): value}, exact=True, score=0.0),
            Candidate(field="dtype", changes={"dtype": "bfloat16"}, exact=False, score=0.31),
        ]
        rels = [0.0 if i == 0 else 10.0 ** (-4 + i / 2) for i in range(layers)]
    evidence = Evidence(
        mode="exact",
        attribution_status=att_status,
        attribution_note=att_note,
        probes=[ProbeEvidence(probe=f"keys.L{i}", rel=r, band=0.0) for i, r in enumerate(rels)],
    )
    return Verdict(
        node=node, t=time.time(), seq=seq, status=status, request_id=f"{node}-{seq}",
        evidence=evidence, attribution=attribution, declared=DECLARED, replay_s=0.05,
        reference="cpu",
    )  # fmt: skip


def alert(node: str, kind: AlertKind = "mismatch", n: int = 0) -> Alert:
    return Alert(
        node=node, t=time.time(), id=f"{node}-{kind}-{n}", kind=kind, severity="critical",
        message=f"{node}: {kind}", seq=n,
    )  # fmt: skip


def random_verdict(rng: random.Random, nodes: list[str], seq: int) -> Verdict:
    node = rng.choice(nodes)
    if rng.random() < 0.02:
        return verdict(node, seq, "mismatch", "batch_size", 4)
    return verdict(node, seq)


class Publisher:
    """A real PUB socket on a random loopback port, for tests."""

    def __init__(self, ctx: zmq.Context | None = None) -> None:
        self.ctx = ctx or zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.PUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.endpoint = f"tcp://127.0.0.1:{port}"

    def send(self, *msgs: Message) -> None:
        for m in msgs:
            self.sock.send_multipart(encode(m))

    def close(self) -> None:
        self.sock.close(0)
