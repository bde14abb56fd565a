"""The replay daemon's configuration: one TOML file, checked up front with actionable errors."""

from __future__ import annotations

import os
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError
from fpmon.replay.accounting import KEYS as ACCOUNTING_KEYS
from fpmon.replay.accounting import settings
from fpmon.replay.limits import Caps

ATTRIBUTION_FIELDS = ("batch_size", "attn_impl", "dtype", "compiled")
# Sections whose keys are checked: a misspelt cap or grace would otherwise silently fall back
# to its default, the opposite of what its author meant.
SECTION_KEYS = {
    "accounting": ACCOUNTING_KEYS,
    "openings": (
        "deadline_s",
        "retries",
        "max_inflight",
        "repair_timeout_s",
        "grace_s",
        "max_late",
        "min_retention_s",
    ),
    "limits": (
        "max_message_bytes",
        "flood_msgs_per_s",
        "flood_rejects_per_min",
        "head_timeout_s",
        "deaf_after_s",
        "state_rate_per_s",
        "state_burst",
        "max_batch",
        "max_tokens",
        "max_replay_s",
    ),
}


@dataclass(frozen=True)
class NodeConfig:
    """One agent the daemon verifies: where it publishes, where it opens, the keys pinned."""

    name: str
    publish: str  # the agent's PUB (commit/head/telemetry); unused when a hub is configured
    openings: str  # the agent's openings ROUTER
    sign_pubkey: bytes  # Ed25519 head key (32 bytes), pinned: heads signed otherwise are breaks
    curve_pubkey: str = ""  # Z85 Curve server key of the agent; required outside loopback


@dataclass(frozen=True)
class ReplayConfig:
    nodes: tuple[NodeConfig, ...]
    store: Path
    publish: str = "tcp://127.0.0.1:7801"  # our PUB for verdict/alert (bound)
    state: str = "tcp://127.0.0.1:7802"  # ROUTER answering StateRequest (bound)
    hub: str = ""  # hub XPUB to SUB from instead of each agent's PUB
    hub_xsub: str = ""  # when set, our PUB connects here instead of binding `publish`
    hub_curve_pubkey: str = ""  # the hub's Curve server key (Z85), when the hub runs Curve
    metrics_port: int = 0  # 0: no Prometheus endpoint
    device: str = "cpu"
    threads: int = 0  # torch intra-op threads; 0: 1 on CPU (as agents run), torch's default on GPU
    calibration: Path | None = None
    models: dict[str, str] = field(default_factory=lambda: {"tiny": "tiny"})
    name: str = "replay"
    # sampling
    sampling_key: bytes = b""
    rate: float = 0.05
    suspect_rate: float = 0.5
    suspect_window_s: float = 600.0
    # openings
    open_deadline_s: float = 2.0
    open_retries: int = 2
    max_inflight_openings: int = 256
    # a hole in a node's feed unanswered this long raises `gap_unrepaired` (a warning)
    repair_timeout_s: float = 60.0
    open_grace_s: float = 30.0  # an answer this late after giving up is still judged
    open_max_late: int = 4096  # answers awaited in grace at once (a bound on memory)
    min_retention_s: float = 3600.0  # `purged` sooner after commit: a dodge, unopened critical
    # replay queue and attribution
    queue_max: int = 64
    attribution: bool = True
    attribution_fields: tuple[str, ...] = ATTRIBUTION_FIELDS
    attribution_batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    attribution_max_candidates: int = 16
    # timing / capacity
    timing_margin: float = 0.5
    timing_min_samples: int = 5
    capacity_margin: float = 0.25
    capacity_window_s: float = 60.0
    interference_profile: Path | None = None  # JSON from `fpmon replay interference`
    # [accounting]: thresholds of undeclared_capacity / foreign_process (replay/accounting.py)
    accounting: dict[str, Any] = field(default_factory=dict)
    # abuse
    max_message_bytes: int = 4 << 20
    flood_msgs_per_s: float = 20_000.0
    flood_rejects_per_min: int = 100
    head_timeout_s: float = 10.0  # commits left without a signed head this long: alert
    deaf_after_s: float = 10.0  # a SUB that hears nothing this long: alert, resubscribe; 0 off
    state_rate_per_s: float = 2.0  # StateRequests answered per peer per second (token bucket)
    state_burst: float = 5.0  # ... and in a burst; all peers together get 10x both
    state_clients_dir: Path | None = None  # Curve keys of monitors allowed to ask for state
    curve_secret_file: Path | None = None  # our zmq.auth certificate (public + secret)
    # replay caps (replay/limits.py): beyond them a record is `unverifiable`, the node suspect
    max_batch: int = Caps.max_batch
    max_tokens: int = Caps.max_tokens
    max_replay_s: float = Caps.max_replay_s

    @property
    def caps(self) -> Caps:
        return Caps(self.max_batch, self.max_tokens, self.max_replay_s)

    # Ed25519 key we sign verdicts, alerts and state replies with (PEM, 0600); made on first
    # start, public half as hex beside it (`.pub`). None: verifier-signing.key by the store.
    signing_key_file: Path | None = None

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.store.with_name("verifier-signing.key")


def _err(path: Path, what: str) -> FpmonError:
    return FpmonError(f"{path}: {what}")


def _key_bytes(path: Path, where: str, text: str, size: int) -> bytes:
    try:
        raw = bytes.fromhex(text.strip())
    except ValueError:
        raise _err(path, f"{where} is not hex: give {2 * size} hex digits") from None
    if len(raw) != size:
        raise _err(path, f"{where} is {len(raw)} bytes, expected {size}")
    return raw


def _read_secret(path: Path, key_file: Path) -> bytes:
    if not key_file.exists():
        raise _err(
            path,
            f"sampling key file {key_file} does not exist; write 32+ random bytes "
            f"as hex there (python -c 'import os;print(os.urandom(32).hex())')",
        )
    mode = key_file.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise _err(path, f"sampling key file {key_file} is readable by others: chmod 600 it")
    key = key_file.read_text().strip()
    try:
        raw = bytes.fromhex(key)
    except ValueError:
        raise _err(path, f"sampling key file {key_file} is not hex") from None
    if len(raw) < 16:
        raise _err(path, f"sampling key in {key_file} has {len(raw)} bytes; use at least 16")
    return raw


def _sampling_key(path: Path, s: dict[str, Any], base: Path) -> bytes:
    if "key_file" in s:
        return _read_secret(path, base / str(s["key_file"]))
    if "key" in s:
        if os.stat(path).st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise _err(
                path,
                "holds the sampling key inline but is readable by others: chmod 600 "
                "it or move the key to [sampling] key_file",
            )
        raw = bytes.fromhex(str(s["key"]))
        if len(raw) < 16:
            raise _err(path, "[sampling] key must be at least 16 bytes of hex")
        return raw
    # Without a configured key, a per-process random one: still unpredictable to nodes, but
    # a restart picks a different sample (stated so the operator can choose otherwise).
    return os.urandom(32)


def _nodes(path: Path, raw: list[Any]) -> tuple[NodeConfig, ...]:
    if not raw:
        raise _err(path, "no [[node]] entries: list the agents this daemon verifies")
    nodes = []
    seen = set()
    for i, n in enumerate(raw):
        where = f"[[node]] #{i + 1}"
        for k in ("name", "openings", "sign_pubkey"):
            if k not in n:
                raise _err(path, f"{where} lacks {k!r}")
        if n["name"] in seen:
            raise _err(path, f"{where}: node name {n['name']!r} is listed twice")
        seen.add(n["name"])
        nodes.append(
            NodeConfig(
                name=str(n["name"]),
                publish=str(n.get("publish", "")),
                openings=str(n["openings"]),
                sign_pubkey=_key_bytes(path, f"{where} sign_pubkey", str(n["sign_pubkey"]), 32),
                curve_pubkey=str(n.get("curve_pubkey", "")),
            )
        )
    return tuple(nodes)


def _check_keys(path: Path, doc: dict[str, Any]) -> None:
    for section, known in SECTION_KEYS.items():
        unknown = sorted(set(doc.get(section, {})) - set(known))
        if unknown:
            raise _err(path, f"[{section}] has unknown keys {unknown}; known: {', '.join(known)}")


def _at_least(path: Path, where: str, value: float, low: float, strict: bool = False) -> None:
    if value < low or (strict and value == low):
        raise _err(path, f"{where} = {value} must be {'>' if strict else '>='} {low}")


def _caps(path: Path, lim: dict[str, Any], batch_sizes: tuple[int, ...]) -> dict[str, Any]:
    caps = Caps(
        int(lim.get("max_batch", Caps.max_batch)),
        int(lim.get("max_tokens", Caps.max_tokens)),
        float(lim.get("max_replay_s", Caps.max_replay_s)),
    )
    _at_least(path, "[limits] max_batch", caps.max_batch, 1)
    _at_least(path, "[limits] max_tokens", caps.max_tokens, 1)
    _at_least(path, "[limits] max_replay_s", caps.max_replay_s, 0, strict=True)
    if any(b > caps.max_batch for b in batch_sizes):
        raise _err(
            path,
            f"[attribution] batch_sizes {list(batch_sizes)} go beyond [limits] max_batch "
            f"{caps.max_batch}: attribution would replay what the caps refuse",
        )
    return {
        "max_batch": caps.max_batch,
        "max_tokens": caps.max_tokens,
        "max_replay_s": caps.max_replay_s,
    }


def _openings(path: Path, o: dict[str, Any]) -> dict[str, Any]:
    out = {
        "open_deadline_s": float(o.get("deadline_s", 2.0)),
        "open_retries": int(o.get("retries", 2)),
        "max_inflight_openings": int(o.get("max_inflight", 256)),
        "repair_timeout_s": float(o.get("repair_timeout_s", 60.0)),
        "open_grace_s": float(o.get("grace_s", ReplayConfig.open_grace_s)),
        "open_max_late": int(o.get("max_late", ReplayConfig.open_max_late)),
        "min_retention_s": float(o.get("min_retention_s", ReplayConfig.min_retention_s)),
    }
    _at_least(path, "[openings] grace_s", out["open_grace_s"], 0)
    _at_least(path, "[openings] max_late", out["open_max_late"], 1)
    _at_least(path, "[openings] min_retention_s", out["min_retention_s"], 0)
    return out


def _accounting(path: Path, raw: Any, timing: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise _err(path, "[accounting] must be a table")
    settings(raw, float(timing.get("capacity_margin", 0.25)), f"{path}: [accounting]")
    return dict(raw)


def parse(path: Path, doc: dict[str, Any]) -> ReplayConfig:
    _check_keys(path, doc)
    base = path.parent
    r = doc.get("replay", {})
    s = doc.get("sampling", {})
    o = doc.get("openings", {})
    a = doc.get("attribution", {})
    t = doc.get("timing", {})
    q = doc.get("queue", {})
    lim = doc.get("limits", {})
    nodes = _nodes(path, doc.get("node", []))
    if not r.get("hub"):
        for n in nodes:
            if not n.publish:
                raise _err(path, f"node {n.name!r} has no publish endpoint and no [replay] hub")
    fields = tuple(a.get("fields", ATTRIBUTION_FIELDS))
    bad = [f for f in fields if f not in ATTRIBUTION_FIELDS]
    if bad:
        raise _err(path, f"[attribution] fields {bad} unknown; use {', '.join(ATTRIBUTION_FIELDS)}")
    rate, suspect = float(s.get("rate", 0.05)), float(s.get("suspect_rate", 0.5))
    if not (0 <= rate <= 1 and 0 <= suspect <= 1):
        raise _err(path, "[sampling] rate and suspect_rate are fractions from 0 to 1")
    cal = r.get("calibration")
    secret = r.get("curve_secret_file")
    batch_sizes = tuple(int(b) for b in a.get("batch_sizes", (1, 2, 4, 8)))
    signing = r.get("signing_key_file")
    clients = r.get("state_clients_dir")
    if secret and not clients:
        raise _err(
            path,
            "[replay] curve_secret_file is set but state_clients_dir is not: with Curve the "
            "state endpoint answers only the monitor keys (*.key) in that folder",
        )
    return ReplayConfig(
        nodes=nodes,
        store=base / str(r.get("store", "replay.sqlite")),
        publish=str(r.get("publish", ReplayConfig.publish)),
        state=str(r.get("state", ReplayConfig.state)),
        hub=str(r.get("hub", "")),
        hub_xsub=str(r.get("hub_xsub", "")),
        hub_curve_pubkey=str(r.get("hub_curve_pubkey", "")),
        metrics_port=int(r.get("metrics_port", 0)),
        device=str(r.get("device", "cpu")),
        threads=int(r.get("threads", 0)),
        calibration=(base / str(cal)) if cal else None,
        models={str(k): str(v) for k, v in doc.get("models", {"tiny": "tiny"}).items()},
        name=str(r.get("name", "replay")),
        sampling_key=_sampling_key(path, s, base),
        rate=rate,
        suspect_rate=suspect,
        suspect_window_s=float(s.get("suspect_window_s", 600.0)),
        **_openings(path, o),
        queue_max=int(q.get("max", 64)),
        attribution=bool(a.get("enabled", True)),
        attribution_fields=fields,
        attribution_batch_sizes=batch_sizes,
        attribution_max_candidates=int(a.get("max_candidates", 16)),
        timing_margin=float(t.get("margin", 0.5)),
        timing_min_samples=int(t.get("min_samples", 5)),
        capacity_margin=float(t.get("capacity_margin", 0.25)),
        capacity_window_s=float(t.get("capacity_window_s", 60.0)),
        interference_profile=(base / str(t["interference_profile"]))
        if t.get("interference_profile")
        else None,
        accounting=_accounting(path, doc.get("accounting", {}), t),
        max_message_bytes=int(lim.get("max_message_bytes", 4 << 20)),
        flood_msgs_per_s=float(lim.get("flood_msgs_per_s", 20_000.0)),
        flood_rejects_per_min=int(lim.get("flood_rejects_per_min", 100)),
        head_timeout_s=float(lim.get("head_timeout_s", 10.0)),
        deaf_after_s=float(lim.get("deaf_after_s", 10.0)),
        state_rate_per_s=float(lim.get("state_rate_per_s", 2.0)),
        state_burst=float(lim.get("state_burst", 5.0)),
        state_clients_dir=(base / str(clients)) if clients else None,
        curve_secret_file=(base / str(secret)) if secret else None,
        **_caps(path, lim, batch_sizes),
        signing_key_file=(base / str(signing)) if signing else None,
    )


def read_toml(path: str | Path, example: str) -> tuple[Path, dict[str, Any]]:
    """A config file's document, or a one-line error naming the example to start from."""
    p = Path(path)
    if not p.exists():
        raise FpmonError(f"{p}: no such config file; start from {example}")
    try:
        return p, tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise FpmonError(f"{p}: not valid TOML ({e})") from None


def load(path: str | Path) -> ReplayConfig:
    p, doc = read_toml(path, "deploy/replay.example.toml")
    try:
        return parse(p, doc)
    except (TypeError, ValueError) as e:
        raise FpmonError(f"{p}: {e}") from None
