"""Serving overhead: agent throughput (capture + durable log + publish) / bare engine throughput.

All sides run the same batches on the same engine in one process, alternating batch by batch
so machine load hits them alike. Bare: `engine.run_batch` without probes. Capture: with the
probes (the engine's share). Agent: the agent's own engine loop (`Worker.serve`: probes,
records, canonical encoding, SQLite append, commits handed to a live publisher thread on a
real PUB socket). Prints the rates, the ratio (goal >= 0.97), its split, and bytes per
generated token at the default probe budget.

    python bench/agent_overhead.py [--model tiny] [--device cpu] [--dtype bfloat16]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon.agents.config import AgentConfig, EngineConfig
from fpmon.agents.heads import HeadSigner
from fpmon.agents.node import probe_spec
from fpmon.agents.publisher import Publisher
from fpmon.agents.redteam import RedTeam
from fpmon.agents.store import RecordLog
from fpmon.agents.worker import Job, Worker
from fpmon.engines.base import BatchRequest
from fpmon.wire import SubmitRequest

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

PROMPTS = [
    "The quick brown fox jumps over the lazy dog",
    "Inference nodes commit to their activations",
    "A verifier replays a secret sample of records",
    "Rounding patterns reveal the computation graph",
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (as the agent)")
    ap.add_argument("--tokens", type=int, default=32, help="generated tokens per request")
    ap.add_argument("--batches", type=int, default=4, help="batches per round")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import torch

    from fpmon.engines.hf import HFEngine

    torch.set_num_threads(args.threads)
    engine = HFEngine(args.model, dtype=args.dtype, device=args.device)
    with tempfile.TemporaryDirectory() as d:
        cfg = AgentConfig(
            node="bench",
            state_dir=Path(d),
            engine=EngineConfig(model=args.model, dtype=args.dtype, device=args.device),
        )
        probes = probe_spec(cfg, engine.num_layers)
        store = RecordLog(cfg.db_path, node="bench")
        ctx = zmq.Context()
        pub = ctx.socket(zmq.PUB)
        pub.bind_to_random_port("tcp://127.0.0.1")
        publisher = Publisher(
            pub,
            HeadSigner(Ed25519PrivateKey.generate(), "bench"),
            head_seq=-1,
            head_chain=b"\0" * 32,
        )
        pt = threading.Thread(target=publisher.run, daemon=True)
        pt.start()
        worker = Worker(
            cfg, engine, store, ctx, "inproc://bench-replies", publisher.queue, RedTeam(), probes
        )
        rows = [engine.encode(p) for p in PROMPTS]
        width = max(len(r) for r in rows)
        rows = [r + r[: width - len(r)] if len(r) < width else r for r in rows]  # equal lengths
        prompts = [engine.decode(r) for r in rows]

        def bare() -> None:
            engine.run_batch(
                BatchRequest(
                    rows=rows,
                    decode_steps=args.tokens - 1,
                    probe_rows=list(range(len(rows))),
                    probes=None,
                )
            )

        def capture() -> None:
            engine.run_batch(
                BatchRequest(
                    rows=rows,
                    decode_steps=args.tokens - 1,
                    probe_rows=list(range(len(rows))),
                    probes=probes,
                )
            )

        def agent() -> None:
            jobs = [
                Job(
                    [b"x"],
                    SubmitRequest(
                        node="c",
                        t=0.0,
                        request_id=f"{i}-{time.time()}",
                        prompt=p,
                        max_tokens=args.tokens,
                    ),
                    0.0,
                )
                for i, p in enumerate(prompts)
            ]
            assert worker.begin(jobs) == []  # nothing rejected; replies come once durable

        replies = ctx.socket(zmq.PULL)
        replies.bind("inproc://bench-replies")
        committer = worker.start_committer()
        bare(), capture(), agent()  # warm up every path
        worker.drain()
        # Alternate round by round (a round: `batches` batches of each side, the agent's until
        # every record is durable, published and answered), so drifting load hits all alike.
        spent = {"bare": 0.0, "capture": 0.0, "agent": 0.0}
        ratios = []
        for _ in range(args.rounds):
            t = {}
            for name, fn in (("bare", bare), ("capture", capture), ("agent", agent)):
                t0 = time.perf_counter()
                for _ in range(args.batches):
                    fn()
                if name == "agent":
                    worker.drain()
                t[name] = time.perf_counter() - t0
                spent[name] += t[name]
            ratios.append(t["bare"] / t["agent"])
        tokens = args.rounds * args.batches * len(rows) * args.tokens
        worker.pending.put(None)
        committer.join()
        n_replies = 0
        while replies.poll(0):
            replies.recv_multipart()
            n_replies += 1
        replies.close(0)
        st = store.stats()
        assert n_replies == st.records, (n_replies, st.records)  # every record answered
        publisher.stop()
        pt.join()
        store.close()
        ctx.term()
    print(
        f"engine {engine.setup.summary()} on {args.device}, batch {len(rows)}, "
        f"{args.tokens} tokens/request, probes layers {list(probes.layers)} top-{probes.topk}"
    )
    print(f"bare engine  {tokens / spent['bare']:8.1f} tokens/s")
    print(f"capture only {tokens / spent['capture']:8.1f} tokens/s (engine with probes)")
    print(f"agent        {tokens / spent['agent']:8.1f} tokens/s")
    print(
        f"split: capture/bare {spent['bare'] / spent['capture']:.3f}, "
        f"agent/capture (log + publish + records) {spent['capture'] / spent['agent']:.3f}"
    )
    print(
        f"overhead ratio agent/bare throughput: {spent['bare'] / spent['agent']:.3f} "
        f"(median of {len(ratios)} rounds {statistics.median(ratios):.3f}; goal >= 0.97)"
    )
    print(
        f"bytes per generated token at this probe budget: {st.bytes_per_token:.0f} "
        f"({st.body_bytes} bytes / {st.tokens} tokens, {st.records} records)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
