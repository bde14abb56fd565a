"""The monitor's TOML config: endpoints, theme, keymap, buffer sizes. Bad input -> FpmonError.

```toml
[monitor]
endpoints = ["tcp://127.0.0.1:7791"]  # hub XPUB, or each agent's and the replay daemon's PUB
state = "tcp://127.0.0.1:7782"         # replay daemon's state ROUTER (Clone snapshot)
verifier_key = "<64 hex>"              # the replay daemon's Ed25519 public key: verdicts,
                                       # alerts and state replies it did not sign are dropped
theme = "fpmon-dark"
inspector = false                      # read-only: no acknowledge, no export
record = ""                            # record the received feed to this file
export_dir = ""                        # where `x` writes (default ~/.local/share/fpmon/exports)
[curve]                                # outside loopback (see docs/MONITOR.md)
server_key = "<z85 public key of the hub / daemon>"
state_server_key = "<z85 public key of the replay daemon>"  # when server_key is the hub's
client_keys = "keys/monitor.key_secret"
[keymap]
fleet = "f"                            # binding id -> key(s), comma separated
```
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError
from fpmon.monitor.model import Limits

_ENDPOINT = re.compile(r"^(tcp://[^\s:]+:\d{1,5}|ipc://\S+|inproc://\S+)$")
SECTIONS = ("monitor", "curve", "keymap", "limits")


@dataclass
class CurveConfig:
    server_key: bytes  # z85 public key of the server the monitor connects to
    public: bytes
    secret: bytes
    # The replay daemon's own Curve key, for its state endpoint when the SUB goes to a hub
    # (a different server); None: `server_key`.
    state_server_key: bytes | None = None

    @property
    def state_key(self) -> bytes:
        return self.state_server_key or self.server_key


@dataclass
class MonitorConfig:
    endpoints: list[str] = field(default_factory=list)
    state: str = ""
    theme: str = "fpmon-dark"
    inspector: bool = False
    record: str = ""
    export_dir: str = ""  # "" : default_export_dir()
    refresh_s: float = 0.5
    state_timeout_s: float = 2.0
    deaf_after_s: float = 10.0  # nothing heard this long on the SUB: show `deaf`, resubscribe
    verifier_key: bytes | None = None  # Ed25519 public key the verifier signs with
    keymap: dict[str, str] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)
    curve: CurveConfig | None = None


def check_endpoint(ep: Any, where: str) -> str:
    if not isinstance(ep, str) or not _ENDPOINT.match(ep):
        raise FpmonError(
            f"{where}: {ep!r} is not a ZeroMQ endpoint; write it like tcp://127.0.0.1:7791"
        )
    return ep


def load_config(path: str | Path | None) -> MonitorConfig:
    if path is None:
        return MonitorConfig()
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise FpmonError(f"config {p} does not exist; copy deploy/monitor.example.toml") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FpmonError(f"config {p} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise FpmonError(f"config {p} is not valid TOML: {e}") from None
    return parse_config(raw, str(p))


def parse_config(raw: dict[str, Any], where: str = "config") -> MonitorConfig:
    unknown = set(raw) - set(SECTIONS)
    if unknown:
        raise FpmonError(
            f"{where}: unknown section(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(SECTIONS)}"
        )
    cfg = MonitorConfig()
    mon = _section(raw, "monitor", where)
    known = {"endpoints", "state", "theme", "inspector", "record", "refresh_s", "state_timeout_s",
             "deaf_after_s", "verifier_key", "export_dir"}  # fmt: skip
    _no_unknown(mon, known, f"{where} [monitor]")
    eps = mon.get("endpoints", [])
    if isinstance(eps, str):
        eps = [eps]
    if not isinstance(eps, list):
        raise FpmonError(f"{where} [monitor] endpoints: expected a list of ZeroMQ endpoints")
    cfg.endpoints = [check_endpoint(e, f"{where} [monitor] endpoints") for e in eps]
    if mon.get("state"):
        cfg.state = check_endpoint(mon["state"], f"{where} [monitor] state")
    for name, typ in (("theme", str), ("record", str), ("inspector", bool), ("export_dir", str)):
        if name in mon:
            if not isinstance(mon[name], typ):
                raise FpmonError(f"{where} [monitor] {name}: expected a {typ.__name__}")
            setattr(cfg, name, mon[name])
    for name in ("refresh_s", "state_timeout_s", "deaf_after_s"):
        if name in mon:
            setattr(cfg, name, _positive(mon[name], f"{where} [monitor] {name}"))
    if "verifier_key" in mon:
        cfg.verifier_key = verifier_key(mon["verifier_key"], f"{where} [monitor] verifier_key")
    km = _section(raw, "keymap", where)
    for k, v in km.items():
        if not isinstance(v, str) or not v.strip():
            raise FpmonError(f'{where} [keymap] {k}: expected a key name like "f" or "ctrl+f"')
    cfg.keymap = dict(km)
    lim = _section(raw, "limits", where)
    names = {f.name: f for f in fields(Limits)}
    _no_unknown(lim, set(names), f"{where} [limits]")
    for k, v in lim.items():
        setattr(cfg.limits, k, type(getattr(cfg.limits, k))(_positive(v, f"{where} [limits] {k}")))
    curve = _section(raw, "curve", where)
    if curve:
        cfg.curve = _curve(curve, f"{where} [curve]")
    return cfg


def verifier_key(v: Any, where: str) -> bytes:
    """The replay daemon's Ed25519 public key: 64 hex digits (its `verifier-signing.key.pub`)."""
    try:
        raw = bytes.fromhex(v) if isinstance(v, str) else b""
    except ValueError:
        raw = b""
    if len(raw) != 32:
        raise FpmonError(
            f"{where}: expected the verifier's Ed25519 public key as 64 hex digits "
            "(the replay daemon's verifier-signing.key.pub)"
        )
    return raw


def _section(raw: dict[str, Any], name: str, where: str) -> dict[str, Any]:
    sec = raw.get(name, {})
    if not isinstance(sec, dict):
        raise FpmonError(f"{where}: [{name}] must be a table")
    return sec


def _no_unknown(sec: dict[str, Any], known: set[str], where: str) -> None:
    unknown = set(sec) - known
    if unknown:
        raise FpmonError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; "
            f"known: {', '.join(sorted(known))}"
        )


def _positive(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
        raise FpmonError(f"{where}: expected a positive number, got {v!r}")
    return float(v)


def _curve(sec: dict[str, Any], where: str) -> CurveConfig:
    import zmq
    import zmq.auth

    _no_unknown(sec, {"server_key", "state_server_key", "client_keys"}, where)
    if not zmq.has("curve"):
        raise FpmonError(f"{where}: this libzmq was built without CURVE; install pyzmq wheels")
    server = _z85_key(sec.get("server_key", ""), f"{where} server_key")
    state = sec.get("state_server_key")
    state_key = _z85_key(state, f"{where} state_server_key") if state is not None else None
    path = Path(str(sec.get("client_keys", "")))
    if not path.is_file():
        raise FpmonError(
            f"{where} client_keys: {path} is not a file; create one with `fpmon keygen`"
        )
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (ValueError, OSError) as e:
        raise FpmonError(f"{where} client_keys: {path} is not a ZeroMQ certificate: {e}") from None
    if not secret:
        raise FpmonError(f"{where} client_keys: {path} holds no secret key (use the .key_secret)")
    return CurveConfig(server_key=server, public=public, secret=secret, state_server_key=state_key)


def _z85_key(v: Any, where: str) -> bytes:
    import zmq

    if not isinstance(v, str) or len(v) != 40:
        raise FpmonError(f"{where}: expected a 40-character Z85 public key")
    try:
        zmq.utils.z85.decode(v.encode())
    except (ValueError, KeyError):
        raise FpmonError(f"{where}: not valid Z85") from None
    return v.encode()
