"""Every message that crosses a process boundary, as a data class defined once.

`docs/PROTOCOL.md` documents these; `SCHEMA_VERSION` versions them. Decoding validates each
field's type against the annotations here, so a message either matches the schema or is
rejected with a reason.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

SCHEMA_VERSION = 1

# Verdict statuses (DESIGN.md), plus `unverifiable` for records the verifier cannot replay.
STATUSES = (
    "match",
    "within_noise",
    "mismatch",
    "unopened",
    "bad_opening",
    "chain_break",
    "unverifiable",
)
ALERT_KINDS = (
    "chain_break",
    "unopened",
    "bad_opening",
    "mismatch",
    "suspected_hidden_work",
    "undeclared_capacity",
    "flood",
    "unverifiable",
    "shed",
    "deaf",
)


class SchemaError(ValueError):
    pass


@dataclass(frozen=True, kw_only=True)
class Message:
    TOPIC: ClassVar[str] = ""
    v: int = SCHEMA_VERSION
    node: str
    t: float

    def to_map(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Message:
        """Validate `m` against this class's annotations (checks compiled once per class)."""
        fields, names = _compiled(cls)
        if not names.issuperset(m):
            raise SchemaError(f"{cls.TOPIC}: unknown fields {sorted(set(m) - names)}")
        if m.get("v") != SCHEMA_VERSION:
            raise SchemaError(
                f"{cls.TOPIC}: schema version {m.get('v')!r}, expected {SCHEMA_VERSION}"
            )
        kwargs = {}
        for name, check, required in fields:
            if name in m:
                kwargs[name] = check(m[name])
            elif required:
                raise SchemaError(f"{cls.TOPIC}: missing field {name!r}")
        return cls(**kwargs)


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _check(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arm in typing.get_args(tp):
            try:
                return _check(value, arm, where)
            except SchemaError:
                continue
        raise SchemaError(f"{where}: {type(value).__name__} does not match {tp}")
    if tp is type(None):
        if value is None:
            return None
        raise SchemaError(f"{where}: expected nil")
    if tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        raise SchemaError(f"{where}: expected a number, got {type(value).__name__}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise SchemaError(f"{where}: expected an integer, got {type(value).__name__}")
    if tp in (str, bytes, bool):
        if isinstance(value, tp) and (tp is bool or not isinstance(value, bool)):
            return value
        raise SchemaError(f"{where}: expected {tp.__name__}, got {type(value).__name__}")
    if origin is list:
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        (arm,) = typing.get_args(tp) or (Any,)
        return [_check(x, arm, f"{where}[{i}]") for i, x in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected a map, got {type(value).__name__}")
        _, arm = typing.get_args(tp) or (str, Any)
        return {k: _check(x, arm, f"{where}.{k}") for k, x in value.items()}
    raise SchemaError(f"{where}: unsupported schema type {tp}")


Checker = Callable[[Any], Any]
_COMPILED: dict[type, tuple[list[tuple[str, Checker, bool]], frozenset[str]]] = {}


def _compile(tp: Any, where: str) -> Checker:
    """A checker for one field: the common exact types take a fast path (ingest decodes
    >50,000 commits/s on one core); anything else, and every error, goes through `_check`."""
    if tp in (int, str, bytes, float):

        def check_exact(v: Any) -> Any:
            return v if type(v) is tp else _check(v, tp, where)

        return check_exact
    if typing.get_origin(tp) is dict and typing.get_args(tp)[1] is Any:

        def check_any_map(v: Any) -> Any:
            # Values typed Any: `_check` accepts them as they are, keys come from msgpack's
            # strict_map_key (strings only).
            return dict(v) if type(v) is dict else _check(v, tp, where)

        return check_any_map
    return lambda v: _check(v, tp, where)


def _compiled(cls: type) -> tuple[list[tuple[str, Checker, bool]], frozenset[str]]:
    if cls not in _COMPILED:
        hints = _hints(cls)
        fields = [
            (
                f.name,
                _compile(hints[f.name], f"{cls.TOPIC}.{f.name}"),  # type: ignore[attr-defined]
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING,
            )
            for f in dataclasses.fields(cls)
        ]
        _COMPILED[cls] = (fields, frozenset(name for name, _, _ in fields))
    return _COMPILED[cls]


def reference_from_map(cls: type[Message], m: dict[str, Any]) -> Message:
    """The plain walker `from_map` must agree with (tests compare them on hostile input)."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if set(m) - names:
        raise SchemaError(f"{cls.TOPIC}: unknown fields {sorted(set(m) - names)}")
    if m.get("v") != SCHEMA_VERSION:
        raise SchemaError(f"{cls.TOPIC}: schema version {m.get('v')!r}, expected {SCHEMA_VERSION}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in m:
            kwargs[f.name] = _check(m[f.name], hints[f.name], f"{cls.TOPIC}.{f.name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{cls.TOPIC}: missing field {f.name!r}")
    return cls(**kwargs)


@dataclass(frozen=True, kw_only=True)
class Commit(Message):
    """Published for every record as soon as it is durable."""

    TOPIC: ClassVar[str] = "commit"
    seq: int
    request_id: str
    record_digest: bytes
    chain: bytes
    setup: dict[str, Any]
    model: str
    prompt_tokens: int
    output_tokens: int
    # Committed timings: evidence of hidden work that leaves numerics untouched.
    prefill_s: float = 0.0
    decode_s: float = 0.0


@dataclass(frozen=True, kw_only=True)
class Head(Message):
    """A signed chain head: Ed25519 over `head_message(node, seq, chain)`."""

    TOPIC: ClassVar[str] = "head"
    seq: int
    chain: bytes
    sig: bytes
    pubkey: bytes


@dataclass(frozen=True, kw_only=True)
class Telemetry(Message):
    """Per-GPU figures from NVML; `gpus` is empty on hosts without NVIDIA GPUs."""

    TOPIC: ClassVar[str] = "telemetry"
    gpus: list[dict[str, Any]] = field(default_factory=list)
    host: dict[str, Any] = field(default_factory=dict)
    source: str = "nvml"  # "nvml" or "host" (no NVIDIA GPU: host CPU/memory only)


@dataclass(frozen=True, kw_only=True)
class Verdict(Message):
    TOPIC: ClassVar[str] = "verdict"
    seq: int
    status: str
    request_id: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    attribution: list[dict[str, Any]] = field(default_factory=list)
    declared: dict[str, Any] = field(default_factory=dict)
    replay_s: float = 0.0
    reference: str = ""  # the reference device, e.g. "cpu" or "NVIDIA H100 80GB HBM3"
    cross_gpu: bool = False
    reason: str = ""
    sig: bytes = b""  # the verifier's Ed25519 signature (fpmon/signing.py)


@dataclass(frozen=True, kw_only=True)
class Alert(Message):
    TOPIC: ClassVar[str] = "alert"
    id: str
    kind: str
    severity: str  # "info", "warning", "critical"
    message: str
    seq: int = -1
    details: dict[str, Any] = field(default_factory=dict)
    sig: bytes = b""  # the verifier's Ed25519 signature (fpmon/signing.py)


@dataclass(frozen=True, kw_only=True)
class OpenRequest(Message):
    """Verifier -> agent (DEALER -> ROUTER): reveal record `seq`. `node` is the verifier."""

    TOPIC: ClassVar[str] = "open"
    seq: int
    nonce: bytes


@dataclass(frozen=True, kw_only=True)
class OpenReply(Message):
    """`status`: ok (record holds the committed bytes), purged, unknown, error."""

    TOPIC: ClassVar[str] = "opened"
    seq: int
    nonce: bytes
    status: str
    record: bytes | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class SubmitRequest(Message):
    """Client -> agent intake: one generation request. `node` names the client."""

    TOPIC: ClassVar[str] = "submit"
    request_id: str
    prompt: str
    max_tokens: int


@dataclass(frozen=True, kw_only=True)
class SubmitReply(Message):
    TOPIC: ClassVar[str] = "submitted"
    request_id: str
    status: str  # ok, rejected, error
    completion: str = ""
    output_ids: list[int] = field(default_factory=list)
    seq: int = -1
    reason: str = ""


MESSAGE_TYPES: dict[str, type[Message]] = {
    m.TOPIC: m
    for m in (
        Commit,
        Head,
        Telemetry,
        Verdict,
        Alert,
        OpenRequest,
        OpenReply,
        SubmitRequest,
        SubmitReply,
    )
}


@dataclass(frozen=True, kw_only=True)
class StateRequest(Message):
    """Monitor -> replay daemon (DEALER -> ROUTER): current state at once (zguide Clone)."""

    TOPIC: ClassVar[str] = "state?"
    since_verdicts: int = 0


@dataclass(frozen=True, kw_only=True)
class StateReply(Message):
    """The daemon's current picture: per-node summaries, recent verdicts, open alerts.

    `nodes` maps node name -> summary map; verdicts/alerts are maps as their own messages'
    `to_map()`; `stream_seq` is the sequence of the last verdict/alert published, so a late
    joiner can drop updates it already has.
    """

    TOPIC: ClassVar[str] = "state"
    nodes: dict[str, Any] = field(default_factory=dict)
    verdicts: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    stream_seq: int = 0
    sig: bytes = b""  # the verifier's Ed25519 signature (fpmon/signing.py)


MESSAGE_TYPES.update({StateRequest.TOPIC: StateRequest, StateReply.TOPIC: StateReply})
