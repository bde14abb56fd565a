"""Agent configuration: one TOML file, checked up front so a bad file fails with one clear line.

The file is `AgentConfig` below, decoded by the one config layer (`fpmon/config.py`: unknown
keys, ranges and enumerations are errors naming the file and the key; relative paths are
relative to the file; a config naming secrets must be private). The `[engine]` table is the
setup the node *declares*. `[redteam]` (off unless present and `enabled = true`) may make the
node run something else; see `agents/redteam.py`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from fpmon import config
from fpmon.config import (
    Fraction,
    Invalid,
    NonNegative,
    NonNegativeFloat,
    Positive,
    PositiveFloat,
    SecretPath,
    Section,
)
from fpmon.setups import AttnImpl, Dtype, EngineKind

DEFAULT_INTAKE = "tcp://127.0.0.1:7700"
DEFAULT_PUBLISH = "tcp://127.0.0.1:7701"
DEFAULT_OPENINGS = "tcp://127.0.0.1:7702"
EXAMPLE = "deploy/agent.example.toml"


class EngineConfig(Section):
    kind: EngineKind = "hf"  # hf | vllm (hosted in the agent's process; see [vllm])
    model: str = "tiny"
    dtype: Dtype = "bfloat16"
    attn: AttnImpl = "sdpa"
    device: str = "cpu"
    sdpa_backend: str = "default"
    compiled: bool = False
    # torch intra-op threads; 0 leaves torch's default. On the CPU, float32 results depend on
    # the thread count (GEMM blocking): the verifier must replay with the same count, so only
    # set this together with the replay side. Co-located agents on few cores may want 1.
    threads: NonNegative = 0


class VllmConfig(Section):
    """vLLM settings, used when `engine.kind = "vllm"`: the sizes of the engine the agent
    hosts, or `server`, the URL of an operator's `vllm serve` running fpmon's plugin (sidecar
    mode, agents/sidecar.py; the sizes are then the server's own flags)."""

    max_num_batched_tokens: Positive = 2048
    max_num_seqs: Positive = 16
    kv_cache_bytes: Positive = 128 << 20
    server: str = ""  # e.g. "http://127.0.0.1:8000"; empty: vLLM runs inside the agent

    def __post_init__(self) -> None:
        if self.server and not self.server.startswith(("http://", "https://")):
            raise ValueError(
                f"server: give the server's URL (http://HOST:PORT), got {self.server!r}"
            )


class BatchingConfig(Section):
    max_batch: Positive = 4
    max_wait_ms: NonNegativeFloat = 20.0
    max_queue: Positive = 256  # beyond this, intake answers `rejected` (back-pressure)
    max_tokens_limit: Positive = 256
    # A batch running longer than this counts as a hung engine: the systemd watchdog stops.
    stall_s: PositiveFloat = 300.0


class ProbeConfig(Section):
    layers: list[NonNegative] | None = None  # None: fpmon.engines.base.default_layers(n)
    topk: Positive = 8
    keys: bool = True
    hidden: bool = True
    logits: bool = True


class EndpointConfig(Section):
    intake: str = DEFAULT_INTAKE
    publish: str = DEFAULT_PUBLISH
    openings: str = DEFAULT_OPENINGS
    hub: str = ""  # when set, the PUB connects to this hub XSUB instead of binding `publish`


class PublishConfig(Section):
    head_every_s: PositiveFloat = 1.0
    head_every_n: Positive = 1000
    telemetry_every_s: PositiveFloat = 1.0
    # GPM (GPU Performance Monitoring) metrics in telemetry, where the GPU supports them:
    # one NVML GPM sample per telemetry interval (cost: bench/telemetry_overhead.py).
    telemetry_gpm: bool = True
    # On start, commitments logged after the last published head are sent again (a crash
    # between log and publish would otherwise leave a gap); at most this many (0: off).
    republish_max: NonNegative = 1024
    # ... with the first head cycle, this long after start: a PUB drops what it sends before
    # subscriptions arrive (ZeroMQ slow joiner).
    republish_after_s: NonNegativeFloat = 1.0


class StoreConfig(Section):
    path: Path | None = None  # default: <state_dir>/records.sqlite
    max_bytes: NonNegative = 1 << 30  # retention: purge oldest record bodies beyond this
    max_age_s: NonNegativeFloat = 7 * 86400.0  # retention: purge record bodies older than this
    hard_max_bytes: NonNegative = 0  # 0: none; else SQLite refuses to grow past it (disk full)
    min_free_bytes: NonNegative = 64 << 20  # stop taking work with less free disk than this
    synchronous: str = "FULL"  # FULL survives power loss; NORMAL survives process crashes

    def __post_init__(self) -> None:
        self.synchronous = self.synchronous.upper()
        if self.synchronous not in ("FULL", "NORMAL", "EXTRA"):
            raise ValueError("synchronous: use FULL, NORMAL or EXTRA")


class SecurityConfig(Section):
    curve: bool = False  # loopback demos may run without; anything else must turn it on
    keys_dir: SecretPath | None = None  # agent.key_secret (Curve) and signing.key (Ed25519)
    clients_dir: Path | None = None  # public keys allowed to submit
    verifiers_dir: Path | None = None  # public keys allowed to open records
    subscribers_dir: Path | None = None  # public keys allowed to subscribe to the PUB
    hub_public_key: Path | None = None  # the hub's Curve public key file, when `hub` is set
    max_msg_bytes: Positive = 1 << 20  # wire limit on intake/openings payloads


class RedTeamConfig(Section):
    """`[redteam]`: DRILLS AND THE DEMO ONLY (agents/redteam.py says what each key does)."""

    enabled: bool = False
    actual_batch: NonNegative = 0
    hide_rows: Literal["", "strip", "forge"] = ""  # how actual_batch's fillers are hidden
    actual_attn: AttnImpl | Literal[""] = ""
    actual_dtype: Dtype | Literal[""] = ""
    tamper_openings: bool = False
    drop_every: NonNegative = 0
    reorder: bool = False
    side_work_duty: Fraction = 0.0  # > 0: hidden work in the engine process, this share of time
    side_work_kind: Literal["compute", "memory"] = "compute"
    hidden_work_s: NonNegativeFloat = 0.0  # covert forward passes after each batch, uncommitted


class AgentConfig(Section):
    node: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] = "node-0"
    state_dir: Path = Path("./fpmon-agent-state")  # record log, status file, own signing key
    engine: EngineConfig = msgspec.field(default_factory=EngineConfig)
    vllm: VllmConfig = msgspec.field(default_factory=VllmConfig)
    batching: BatchingConfig = msgspec.field(default_factory=BatchingConfig)
    probes: ProbeConfig = msgspec.field(default_factory=ProbeConfig)
    endpoints: EndpointConfig = msgspec.field(default_factory=EndpointConfig)
    publish: PublishConfig = msgspec.field(default_factory=PublishConfig)
    store: StoreConfig = msgspec.field(default_factory=StoreConfig)
    security: SecurityConfig = msgspec.field(default_factory=SecurityConfig)
    redteam: RedTeamConfig = msgspec.field(default_factory=RedTeamConfig)

    @property
    def db_path(self) -> Path:
        return self.store.path or Path(self.state_dir) / "records.sqlite"

    @property
    def status_path(self) -> Path:
        return Path(self.state_dir) / "status.json"

    def is_loopback_only(self) -> bool:
        eps = [self.endpoints.intake, self.endpoints.publish, self.endpoints.openings]
        if self.endpoints.hub:
            eps.append(self.endpoints.hub)
        return all(_is_local(e) for e in eps)

    def check(self) -> None:
        if not self.security.curve and not self.is_loopback_only():
            raise Invalid(
                "endpoints outside loopback need CurveZMQ: set [security] curve = true and "
                "keys_dir (make keys with `fpmon keygen --out DIR`)"
            )
        if self.security.curve and not self.security.keys_dir:
            raise Invalid("[security] curve = true needs keys_dir (run `fpmon keygen --out DIR`)")
        if self.vllm.server:
            self._check_sidecar()

    def _check_sidecar(self) -> None:
        """What cannot hold when the engine is an operator's server, refused before start."""
        if self.engine.kind != "vllm":
            raise Invalid('[vllm] server attaches to a vLLM server: set [engine] kind = "vllm"')
        if self.engine.attn != "sdpa" or self.engine.compiled:
            raise Invalid(
                "[engine] attn/compiled: vLLM picks its own attention and runs eager for the "
                'probes; leave attn = "sdpa" and compiled = false with [vllm] server'
            )
        rt = self.redteam
        if rt.enabled and (rt.actual_batch or rt.actual_attn or rt.actual_dtype):
            raise Invalid(
                "[redteam] actual_batch/actual_attn/actual_dtype change what the agent's own "
                "engine runs; with [vllm] server the operator's server runs: unset them"
            )


def _is_local(endpoint: str) -> bool:
    if endpoint.startswith(("inproc://", "ipc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


def load_config(path: str | os.PathLike[str] | None) -> AgentConfig:
    """The agent's config from `path` (None: every default, loopback only)."""
    if path is None:
        return AgentConfig()
    return config.load(path, AgentConfig, example=EXAMPLE)
