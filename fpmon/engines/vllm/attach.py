"""Sidecar side of attaching to an operator's `vllm serve`: turn served requests into records.

The server runs the plugin classes of `fpmon.engines.vllm.serve` (flags in docs/VLLM.md); this
client, running in the agent beside it, calls the plugin through vLLM's `/collective_rpc` route
(dev mode, loopback only) and builds ordinary fpmon records. No vLLM import here.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from typing import Any

import msgpack

from fpmon.errors import FpmonError
from fpmon.records import HIDDEN_PROBE, TOPK_IDS, TOPK_VALUES, Record
from fpmon.setups import Setup
from fpmon.tensors import Blob

_NAMES = {"hidden": HIDDEN_PROBE, "topv": TOPK_VALUES, "topi": TOPK_IDS}


class ServerTap:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.info: dict[str, Any] | None = None

    def _rpc(self, method: str, arg: dict[str, Any]) -> Any:
        body = json.dumps({"method": method, "args": [json.dumps(arg)]}).encode()
        req = urllib.request.Request(
            f"{self.base}/collective_rpc",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return json.loads(resp.read())["results"][0]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise FpmonError(
                    f"{self.base} has no /collective_rpc route: start vllm serve with "
                    "VLLM_SERVER_DEV_MODE=1 (bound to loopback) — see docs/VLLM.md"
                ) from e
            detail = e.read().decode(errors="replace")[:300]
            if method in detail or "has no attribute" in detail or e.code == 500:
                raise FpmonError(
                    f"the vLLM server at {self.base} does not run fpmon's plugin ({method} "
                    "failed): start it with --worker-extension-cls "
                    "fpmon.engines.vllm.serve.FpmonServerWorker --scheduler-cls "
                    "fpmon.engines.vllm.serve.FpmonServerScheduler"
                ) from e
            raise FpmonError(f"vLLM server at {self.base} answered {e.code}: {detail}") from e
        except (urllib.error.URLError, OSError) as e:
            raise FpmonError(f"cannot reach the vLLM server at {self.base}: {e}") from e

    def attach(self, layers: list[int] | None = None, topk: int = 8) -> dict[str, Any]:
        """Install the probes in the server's worker; returns what the server runs."""
        info = self._rpc("fpmon_attach", {"layers": layers, "topk": topk})
        if info["config"].get("prefix_caching"):
            raise FpmonError(
                "the vLLM server has prefix caching on: cached positions are never computed, "
                "so they cannot be probed; restart it with --no-enable-prefix-caching"
            )
        if info["config"].get("cuda_graphs"):
            raise FpmonError(
                "the vLLM server replays CUDA graphs, where fpmon's hooks do not run: restart "
                "it with --enforce-eager"
            )
        self.info = info
        return info

    def drain(self) -> list[dict[str, Any]]:
        """Record material of requests finished since the last drain."""
        return list(self._rpc("fpmon_drain", {})["records"])

    def setup(self, batch_size: int, slot: int) -> Setup:
        info = self._need_info()
        return Setup(
            engine="vllm",
            engine_version=info["engine_version"],
            torch_version=info["torch_version"],
            device="cpu",
            dtype=info["dtype"],
            attn_impl="sdpa",
            batch_size=batch_size,
            slot=slot,
            extra={
                "vllm_attention_backend": info["attention_backend"],
                "omp_threads": int(info.get("omp_threads", 0)),
            },
        )

    def _need_info(self) -> dict[str, Any]:
        if self.info is None:
            raise FpmonError("call attach() before building records")
        return self.info

    def to_record(self, item: dict[str, Any], *, node: str, seq: int) -> Record:
        info = self._need_info()
        prompt, output = list(item["prompt_ids"]), list(item["output_ids"])
        want = list(range(len(prompt) - 1, len(prompt) - 1 + len(output)))
        if item["positions"] != want:
            raise FpmonError(
                f"request {item['request_id']}: probes cover positions {item['positions']}, "
                f"expected {want[:1]}..{want[-1:]} (preempted and recomputed?)"
            )
        probes = {}
        for name, b64 in item["probes"].items():
            blob = Blob.from_map(msgpack.unpackb(base64.b64decode(b64), raw=False))
            probes[_NAMES.get(name, name)] = blob
        sched = item["schedule"]
        now = time.time()
        return Record(
            node=node,
            seq=seq,
            request_id=item["request_id"],
            t_start=now,
            t_end=now,
            model=info["model"],
            weights_digest=info["weights_digest"],
            setup=self.setup(len(sched["row_lengths"]), 0),
            prompt_ids=prompt,
            output_ids=output,
            schedule=sched,
            probes=probes,
            layers=sorted(int(k.removeprefix("keys.L")) for k in probes if k.startswith("keys.L")),
        )


__all__ = ["ServerTap"]
