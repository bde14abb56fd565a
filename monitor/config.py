"""The monitor's TOML config: endpoints, theme, keymap, buffer sizes, as `MonitorConfig`.

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

Decoded by the one config layer (`fpmon/config.py`): unknown keys and bad values are one line
naming the file and the key, relative paths (`record`, `client_keys`) are relative to the
file, and a config naming `client_keys` must be private.
"""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Any

import msgspec

from fpmon import config
from fpmon.config import Invalid, NonNegativeFloat, PositiveFloat, PublicKeyHex, SecretPath, Section
from fpmon.errors import FpmonError
from fpmon.monitor.model import Limits

EXAMPLE = "deploy/monitor.example.toml"
_ENDPOINT = re.compile(r"^(tcp://[^\s:]+:\d{1,5}|ipc://\S+|inproc://\S+)$")


def check_endpoint(ep: Any, where: str) -> str:
    if not isinstance(ep, str) or not _ENDPOINT.match(ep):
        raise FpmonError(
            f"{where}: {ep!r} is not a ZeroMQ endpoint; write it like tcp://127.0.0.1:7791"
        )
    return ep


class Endpoints(list[str]):
    """`[monitor] endpoints`: ZeroMQ endpoints (one may be written without the list)."""

    @classmethod
    def from_toml(cls, v: Any) -> Endpoints:
        eps = [v] if isinstance(v, str) else v
        if not isinstance(eps, list):
            raise ValueError("expected a list of ZeroMQ endpoints")
        for ep in eps:
            if not isinstance(ep, str) or not _ENDPOINT.match(ep):
                raise ValueError(
                    f"{ep!r} is not a ZeroMQ endpoint; write it like tcp://127.0.0.1:7791"
                )
        return cls(eps)


class KeyName(str):
    """A key binding: a key name, or several comma separated."""

    @classmethod
    def from_toml(cls, v: Any) -> KeyName:
        if not isinstance(v, str) or not v.strip():
            raise ValueError(f'expected a key name like "f" or "ctrl+f", got {v!r}')
        return cls(v)


class Z85Key(bytes):
    """A Curve public key: 40 characters of Z85."""

    @classmethod
    def from_toml(cls, v: Any) -> Z85Key:
        import zmq.utils.z85

        if not isinstance(v, str) or len(v) != 40:
            raise ValueError("expected a 40-character Z85 public key")
        try:
            zmq.utils.z85.decode(v.encode())
        except (ValueError, KeyError):
            raise ValueError("not valid Z85") from None
        return cls(v.encode())


class WatchConfig(Section):
    """`[monitor]`: what to watch and how."""

    # a hub's XPUB, or each publisher's PUB (one endpoint may be written without the list)
    endpoints: Endpoints = msgspec.field(default_factory=Endpoints)
    state: str = ""  # the replay daemon's state ROUTER
    theme: str = "fpmon-dark"
    inspector: bool = False
    record: Path | None = None  # record the received feed to this file
    export_dir: Path | None = None  # where `x` writes; None: default_export_dir()
    refresh_s: PositiveFloat = 0.5
    state_timeout_s: PositiveFloat = 2.0
    # Ask the replay daemon for its state again this often (0: once, at start): node
    # summaries carry its accounting windows (the fleet's hidden-work column), which no
    # published message does.
    state_refresh_s: NonNegativeFloat = 15.0
    deaf_after_s: PositiveFloat = 10.0  # nothing heard this long: show `deaf`, resubscribe
    verifier_key: PublicKeyHex | None = None  # Ed25519 public key the verifier signs with

    def __post_init__(self) -> None:
        if self.state:
            try:
                check_endpoint(self.state, "state")
            except FpmonError as e:
                raise ValueError(str(e)) from None


class CurveConfig(Section, dict=True):
    """`[curve]`: outside loopback the monitor is a CurveZMQ client."""

    server_key: Z85Key  # z85 public key of the server the monitor connects to
    client_keys: SecretPath  # our zmq.auth certificate (`fpmon keygen --name monitor`)
    # The replay daemon's own Curve key, for its state endpoint when the SUB goes to a hub
    # (a different server); None: `server_key`.
    state_server_key: Z85Key | None = None

    @cached_property
    def _keys(self) -> tuple[bytes, bytes]:
        import zmq
        import zmq.auth

        if not zmq.has("curve"):
            raise Invalid("[curve]: this libzmq was built without CURVE; install pyzmq wheels")
        path = self.client_keys
        if not path.is_file():
            raise Invalid(
                f"[curve] client_keys: {path} is not a file; create one with `fpmon keygen`"
            )
        config.check_private(path, "[curve] client_keys")
        try:
            public, secret = zmq.auth.load_certificate(path)
        except (ValueError, OSError) as e:
            raise Invalid(f"[curve] client_keys: {path} is not a ZeroMQ certificate: {e}") from None
        if not secret:
            raise Invalid(f"[curve] client_keys: {path} holds no secret key (use the .key_secret)")
        return public, secret

    @property
    def public(self) -> bytes:
        return self._keys[0]

    @property
    def secret(self) -> bytes:
        return self._keys[1]

    @property
    def state_key(self) -> bytes:
        return self.state_server_key or self.server_key


class MonitorConfig(Section):
    monitor: WatchConfig = msgspec.field(default_factory=WatchConfig)
    curve: CurveConfig | None = None
    keymap: dict[str, KeyName] = msgspec.field(default_factory=dict)  # binding id -> key(s)
    limits: Limits = msgspec.field(default_factory=Limits)

    def check(self) -> None:
        if self.curve is not None:
            _ = self.curve.public  # load (and check) our certificate now, not on connect


def load_config(path: str | Path | None) -> MonitorConfig:
    if path is None:
        return MonitorConfig()
    return config.load(path, MonitorConfig, example=EXAMPLE)


def parse_config(raw: dict[str, Any], where: str | Path = "config") -> MonitorConfig:
    """`raw` (a TOML document) as if read from `where`."""
    return config.decode(raw, MonitorConfig, where)
