"""Synthetic wire traffic for tests and the load benchmark (never used by the live monitor).

Messages are real `fpmon.wire` dataclasses, so they go through the same encode/decode path as
an agent's and the replay daemon's; `Publisher` sends them from a real PUB socket.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import zmq

from fpmon.wire import (
    Alert,
    Candidate,
    CapacityMetric,
    CapacityWindow,
    Commit,
    Evidence,
    GpmMetrics,
    GpuProcess,
    GpuSample,
    Message,
    NodeSummary,
    ProbeEvidence,
    StateReply,
    Telemetry,
    Verdict,
    decode,
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


# --- hidden work -----------------------------------------------------------------------------
# One node doing work its committed tokens do not explain, in the figures the H200 measurement
# gave (docs/GPU.md, "Hidden work: what NVML and GPM see"): honest decode SM ~3.8%, tensor
# ~0.2%, DRAM ~3.2%; bf16 matmuls at 50% duty in another process on the same GPU: SM 58%,
# tensor 52%, DRAM 16%, and that process in the GPU's compute process list.
HONEST_GPM = {"sm_util": 3.8, "sm_occupancy": 2.0, "tensor_util": 0.2, "dram_bw_util": 3.2}
HIDDEN_GPM = {"sm_util": 58.0, "sm_occupancy": 30.0, "tensor_util": 52.0, "dram_bw_util": 16.0}
THRESHOLD_SOURCE = "H200 measurement (docs/GPU.md, Hidden work)"
ENGINE = GpuProcess(pid=4242, used_memory=3.1e9, name="fpmon agent", engine=True)
FOREIGN = GpuProcess(pid=5151, used_memory=8.6e8, name="python3 matmul.py", engine=False)


def gpm_telemetry(
    node: str, hidden: bool = True, gpus: int = 1, t: float | None = None,
    gpm: bool = True, processes: list[GpuProcess] | None = None,
) -> Telemetry:  # fmt: skip
    """A node's own GPUs with GPM figures and their compute processes: with `hidden`, a
    foreign process beside the engine and the activity it causes."""
    figures = HIDDEN_GPM if hidden else HONEST_GPM
    procs = processes if processes is not None else [ENGINE, *([FOREIGN] if hidden else [])]
    return Telemetry(
        node=node,
        t=time.time() if t is None else t,
        gpus=[
            GpuSample(
                index=i, uuid=f"GPU-{node}-{i}", name="NVIDIA H200", util=94.0 if hidden else 22.0,
                mem_used=(4e9 if hidden else 3.1e9), mem_total=141e9, power_w=420.0,
                gpm_status="ok" if gpm else "unsupported: not a Hopper GPU",
                gpm=GpmMetrics(interval_s=1.0, **figures) if gpm else None,
                processes=procs if i == 0 else [ENGINE],
            )
            for i in range(gpus)
        ],
        source="nvml",
        scope="engine device cuda:0 -> GPU-0",
    )  # fmt: skip


def capacity_window(
    start_t: float, hidden: bool = True, tokens: int = 3000, window_s: float = 60.0,
    gpm: bool = True,
) -> CapacityWindow:  # fmt: skip
    """The verifier's accounting window (replay/accounting.py) for the figures above: with GPM,
    the four GPM metrics judged against the reference's own GPM per token; without, only NVML
    util against the wall-time bound, and the rest not judged, with the verifier's reason."""
    per_token = {m: v / 100 / 50 for m, v in HONEST_GPM.items()}  # 50 tokens/s honest decode
    observed = HIDDEN_GPM if hidden else HONEST_GPM
    # NVML util against the reference's wall time per token (0.02 s), an upper bound: the
    # honest node sits at ~0.22 of it, the hidden work at ~0.94, under the 1.25 threshold.
    util_obs, util_exp = (0.94 if hidden else 0.22) * window_s, tokens * 0.02
    metrics = [
        CapacityMetric(
            metric="util", observed_s=util_obs, explained_s=util_exp, threshold=1.25,
            floor_s=0.05 * window_s, over=util_obs > 1.25 * util_exp,
            explained_by="reference wall time per token (5 replays), an upper bound",
        )
    ]  # fmt: skip
    not_judged = {}
    for m, pct in observed.items():
        if not gpm:
            not_judged[m] = "not reported (GPM: unsupported: not a Hopper GPU)"
            continue
        obs, exp = pct / 100 * window_s, tokens * per_token[m]
        metrics.append(
            CapacityMetric(
                metric=m, observed_s=obs, explained_s=exp, threshold=2.0,
                floor_s=0.01 * window_s, over=obs > 2.0 * exp and obs - exp > 0.01 * window_s,
                explained_by="GPM on the reference GPU around 5 replays of this node's records",
            )
        )  # fmt: skip
    return CapacityWindow(
        start_t=start_t, window_s=window_s, tokens=tokens, gpus=1, metrics=metrics,
        not_judged=not_judged, threshold_source=THRESHOLD_SOURCE,
    )  # fmt: skip


def hidden_alerts(node: str, n: int = 0, t: float | None = None) -> list[Alert]:
    """The three hidden-work alerts as the replay daemon raises them (ids unique per `n`)."""
    t = time.time() if t is None else t
    w = capacity_window(t - 60.0)
    over = [m.metric for m in w.metrics if m.over]
    return [
        Alert(
            node=node, t=t, id=f"undeclared_capacity:{node}:{n}", kind="undeclared_capacity",
            severity="warning",
            message=f"{node}'s own GPU(s) did more than its {w.tokens} committed tokens "
            f"explain in 60 s: {', '.join(over)} over. Thresholds: {THRESHOLD_SOURCE}",
            details={"window_s": 60.0, "tokens": w.tokens, "over": list[Any](over)},
        ),
        Alert(
            node=node, t=t, id=f"foreign_process:{node}:GPU-{node}-0:{FOREIGN.pid}:{n}",
            kind="foreign_process", severity="warning",
            message=f"{node}'s GPU 0 runs a compute process that is not its engine's: pid "
            f"{FOREIGN.pid} {FOREIGN.name} holding 0.86 GB",
            details={"gpu": 0, "pid": FOREIGN.pid, "name": FOREIGN.name},
        ),
        Alert(
            node=node, t=t, id=f"suspected_hidden_work:{node}:{n}",
            kind="suspected_hidden_work", severity="warning",
            message=f"{node}: committed decode 2.4x the reference's time for the same work",
            details={"direction": "slower", "median_ratio": 2.4},
        ),
    ]  # fmt: skip


def state(
    nodes: dict[str, NodeSummary], alerts: Sequence[Alert] = (), verdicts: Sequence[Verdict] = (),
    t: float | None = None, stream_seq: int = 0,
) -> StateReply:  # fmt: skip
    return StateReply(
        node="replay", t=time.time() if t is None else t, nodes=nodes, verdicts=list(verdicts),
        alerts=list(alerts), stream_seq=stream_seq,
    )  # fmt: skip


def hidden_summary(node: str, start_t: float, hidden: bool = True, gpm: bool = True) -> NodeSummary:
    """A node summary carrying the verifier's last accounting window for the node."""
    return NodeSummary(
        commits=40, declared=DECLARED, capacity="checked: 1 GPU(s), last 60 s",
        last_telemetry=gpm_telemetry(node, hidden, t=start_t + 60.0, gpm=gpm),
        accounting=capacity_window(start_t, hidden, gpm=gpm),
    )  # fmt: skip


class StateServer:
    """A real ROUTER answering every StateRequest with `reply()` (the replay daemon's role):
    a callable, so each refresh can bring a newer picture; `requests` counts what it got."""

    def __init__(self, reply: StateReply | Callable[[], StateReply]) -> None:
        self.ctx: zmq.Context[Any] = zmq.Context.instance()
        self.sock = self.ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.endpoint = f"tcp://127.0.0.1:{self.sock.bind_to_random_port('tcp://127.0.0.1')}"
        self.reply = reply if callable(reply) else (lambda: reply)
        self.requests: list[Message] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            if self.sock.poll(50):
                ident, *frames = self.sock.recv_multipart()
                self.requests.append(decode(frames, expect=("state?",)))
                self.sock.send_multipart([ident, *encode(self.reply())])

    def close(self) -> None:
        self.stop.set()
        self.thread.join(2)
        self.sock.close(0)
