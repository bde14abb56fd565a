"""Agent configuration: one TOML file, checked up front so a bad file fails with one clear line.

The `[engine]` table is the setup the node *declares*. `[redteam]` (off unless present and
`enabled = true`) may make the node run something else; see `agents/redteam.py`.
"""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError
from fpmon.setups import ATTN_IMPLS, DTYPES, ENGINES

DEFAULT_INTAKE = "tcp://127.0.0.1:7700"
DEFAULT_PUBLISH = "tcp://127.0.0.1:7701"
DEFAULT_OPENINGS = "tcp://127.0.0.1:7702"


@dataclass
class EngineConfig:
    kind: str = "hf"  # hf | vllm (hosted in the agent's process; see [vllm])
    model: str = "tiny"
    dtype: str = "bfloat16"
    attn: str = "sdpa"
    device: str = "cpu"
    sdpa_backend: str = "default"
    compiled: bool = False
    # torch intra-op threads; 0 leaves torch's default. On the CPU, float32 results depend on
    # the thread count (GEMM blocking): the verifier must replay with the same count, so only
    # set this together with the replay side. Co-located agents on few cores may want 1.
    threads: int = 0


@dataclass
class VllmConfig:
    """`fpmon.engines.vllm.VLLMEngine` settings, used when `engine.kind = "vllm"`."""

    max_num_batched_tokens: int = 2048
    max_num_seqs: int = 16
    kv_cache_bytes: int = 128 << 20
    server: str = ""  # sidecar mode (attach to an operator's `vllm serve`): not in the agent yet


@dataclass
class BatchingConfig:
    max_batch: int = 4
    max_wait_ms: float = 20.0
    max_queue: int = 256  # beyond this, intake answers `rejected` (back-pressure, not a crash)
    max_tokens_limit: int = 256
    # A batch running longer than this counts as a hung engine: the systemd watchdog stops.
    stall_s: float = 300.0


@dataclass
class ProbeConfig:
    layers: list[int] | None = None  # None: fpmon.engines.base.default_layers(num_layers)
    topk: int = 8
    keys: bool = True
    hidden: bool = True
    logits: bool = True


@dataclass
class EndpointConfig:
    intake: str = DEFAULT_INTAKE
    publish: str = DEFAULT_PUBLISH
    openings: str = DEFAULT_OPENINGS
    hub: str = ""  # when set, the PUB connects to this hub XSUB instead of binding `publish`


@dataclass
class PublishConfig:
    head_every_s: float = 1.0
    head_every_n: int = 1000
    telemetry_every_s: float = 1.0
    # GPM (GPU Performance Monitoring) metrics in telemetry, where the GPU supports them:
    # one NVML GPM sample per telemetry interval (cost: bench/telemetry_overhead.py).
    telemetry_gpm: bool = True
    # On start, commitments logged after the last published head are sent again (a crash
    # between log and publish would otherwise leave a gap); at most this many (0: off).
    republish_max: int = 1024
    # ... with the first head cycle, this long after start: a PUB drops what it sends before
    # subscriptions arrive (ZeroMQ slow joiner).
    republish_after_s: float = 1.0


@dataclass
class StoreConfig:
    path: str = ""  # default: <state_dir>/records.sqlite
    max_bytes: int = 1 << 30  # retention: purge oldest record bodies beyond this
    max_age_s: float = 7 * 86400.0  # retention: purge record bodies older than this
    hard_max_bytes: int = 0  # 0: none; else SQLite refuses to grow past it (acts as disk full)
    min_free_bytes: int = 64 << 20  # stop taking work when the disk has less free than this
    synchronous: str = "FULL"  # FULL survives power loss; NORMAL survives process crashes


@dataclass
class SecurityConfig:
    curve: bool = False  # loopback demos may run without; anything else must turn it on
    keys_dir: str = ""  # holds agent.key_secret (Curve) and signing.key (Ed25519)
    clients_dir: str = ""  # public keys allowed to submit
    verifiers_dir: str = ""  # public keys allowed to open records
    subscribers_dir: str = ""  # public keys allowed to subscribe to the PUB
    hub_public_key: str = ""  # the hub's Curve public key file, when `hub` is set
    max_msg_bytes: int = 1 << 20  # wire limit on intake/openings payloads (counted rejects)


@dataclass
class AgentConfig:
    node: str = "node-0"
    state_dir: str = "./fpmon-agent-state"
    engine: EngineConfig = field(default_factory=EngineConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    probes: ProbeConfig = field(default_factory=ProbeConfig)
    endpoints: EndpointConfig = field(default_factory=EndpointConfig)
    publish: PublishConfig = field(default_factory=PublishConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    redteam: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def db_path(self) -> Path:
        return Path(self.store.path) if self.store.path else Path(self.state_dir) / "records.sqlite"

    @property
    def status_path(self) -> Path:
        return Path(self.state_dir) / "status.json"

    def is_loopback_only(self) -> bool:
        eps = [self.endpoints.intake, self.endpoints.publish, self.endpoints.openings]
        if self.endpoints.hub:
            eps.append(self.endpoints.hub)
        return all(_is_local(e) for e in eps)


def _is_local(endpoint: str) -> bool:
    if endpoint.startswith(("inproc://", "ipc://")):
        return True
    host = endpoint.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    return host in ("127.0.0.1", "localhost", "::1")


_SECTIONS = {
    "engine": EngineConfig,
    "vllm": VllmConfig,
    "batching": BatchingConfig,
    "probes": ProbeConfig,
    "endpoints": EndpointConfig,
    "publish": PublishConfig,
    "store": StoreConfig,
    "security": SecurityConfig,
}


def _section(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise FpmonError(f"{where}: [{where.rsplit(':', 1)[-1]}] must be a table")
    names = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(names)
    if unknown:
        raise FpmonError(
            f"{where}: unknown keys {', '.join(sorted(unknown))}; known: {', '.join(names)}"
        )
    defaults = cls()
    for k, v in raw.items():
        want = type(getattr(defaults, k))
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            raw[k] = float(v)
        elif getattr(defaults, k) is not None and not isinstance(v, want):
            raise FpmonError(f"{where}.{k}: expected {want.__name__}, got {type(v).__name__}")
    return cls(**raw)


def check_private(path: Path, what: str) -> None:
    """Refuse secrets others can read: a leaked signing key lets anyone forge this node's heads."""
    mode = path.stat().st_mode
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise FpmonError(
            f"{what} {path} is world-readable (mode {stat.S_IMODE(mode):o}): "
            f"run `chmod 600 {path}` and start again"
        )


def load_config(path: str | os.PathLike[str] | None) -> AgentConfig:
    if path is None:
        return AgentConfig()
    p = Path(path)
    if not p.is_file():
        raise FpmonError(f"{p}: no such config file; start from deploy/agent.example.toml")
    try:
        raw = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise FpmonError(f"{p}: not valid TOML ({e}); fix the file") from None
    where = str(p)
    top = {k: v for k, v in raw.items() if k not in _SECTIONS and k != "redteam"}
    unknown = set(top) - {"node", "state_dir"}
    if unknown:
        raise FpmonError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
    cfg = AgentConfig(
        node=str(raw.get("node", "node-0")),
        state_dir=str(raw.get("state_dir", "./fpmon-agent-state")),
        redteam=dict(raw.get("redteam", {})),
        source=where,
        **{
            name: _section(cls, raw.get(name, {}), f"{where}:{name}")
            for name, cls in _SECTIONS.items()
        },
    )
    # Relative paths in a config are relative to the config file, not to wherever we started.
    base = p.parent
    cfg.state_dir = (
        str((base / cfg.state_dir).resolve()) if not os.path.isabs(cfg.state_dir) else cfg.state_dir
    )
    sec = cfg.security
    for name in ("keys_dir", "clients_dir", "verifiers_dir", "subscribers_dir", "hub_public_key"):
        v = getattr(sec, name)
        if v and not os.path.isabs(v):
            setattr(sec, name, str((base / v).resolve()))
    if cfg.store.path and not os.path.isabs(cfg.store.path):
        cfg.store.path = str((base / cfg.store.path).resolve())
    validate(cfg)
    if sec.keys_dir or "signing_key" in p.read_text():
        # A config naming secrets is itself sensitive (paths, allowlists): keep it private too.
        check_private(p, "config file")
    return cfg


def validate(cfg: AgentConfig) -> None:
    e = cfg.engine
    if e.kind not in ENGINES:
        raise FpmonError(f"engine.kind {e.kind!r}: use one of {', '.join(ENGINES)}")
    if cfg.vllm.server:
        raise FpmonError(
            "vllm.server (sidecar mode, attaching to an operator's `vllm serve`) is not "
            "supported by the agent yet: leave it unset to host vLLM in the agent"
        )
    if e.dtype not in DTYPES:
        raise FpmonError(f"engine.dtype {e.dtype!r}: use one of {', '.join(DTYPES)}")
    if e.attn not in ATTN_IMPLS:
        raise FpmonError(f"engine.attn {e.attn!r}: use one of {', '.join(ATTN_IMPLS)}")
    b = cfg.batching
    if b.max_batch < 1 or b.max_wait_ms < 0 or b.max_queue < 1:
        raise FpmonError("batching: max_batch and max_queue must be >= 1, max_wait_ms >= 0")
    if cfg.probes.topk < 1:
        raise FpmonError("probes.topk must be >= 1")
    if cfg.publish.head_every_s <= 0 or cfg.publish.head_every_n < 1:
        raise FpmonError("publish: head_every_s must be > 0 and head_every_n >= 1")
    if cfg.publish.republish_max < 0 or cfg.publish.republish_after_s < 0:
        raise FpmonError("publish: republish_max and republish_after_s must be >= 0")
    if cfg.store.synchronous.upper() not in ("FULL", "NORMAL", "EXTRA"):
        raise FpmonError("store.synchronous: use FULL, NORMAL or EXTRA")
    if not cfg.node or len(cfg.node) > 200:
        raise FpmonError("node: give a short non-empty node name")
    if not cfg.security.curve and not cfg.is_loopback_only():
        raise FpmonError(
            "endpoints outside loopback need CurveZMQ: set [security] curve = true and keys_dir "
            "(make keys with `fpmon keygen --out DIR`)"
        )
    if cfg.security.curve and not cfg.security.keys_dir:
        raise FpmonError("[security] curve = true needs keys_dir (run `fpmon keygen --out DIR`)")
