"""Encode and decode wire frames with hard limits on untrusted bytes.

Every rejection is a `WireError` with a short `reason` code, for counting and logging: a
malformed peer costs a counted reason, never a crash or a silent drop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgpack

from fpmon import canonical
from fpmon.wire.messages import MESSAGE_TYPES, Message, SchemaError


class WireError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    max_bytes: int = 4 << 20  # whole payload; records with probes fit well inside
    max_depth: int = 8
    max_items: int = 100_000  # elements of any one array or map
    max_str: int = 1 << 20


DEFAULT_LIMITS = Limits()


def encode(msg: Message) -> list[bytes]:
    return [msg.TOPIC.encode(), canonical.pack(msg.to_map())]


def _reject_ext(code: int, data: bytes) -> Any:
    raise WireError("ext_type", f"msgpack extension type {code} is not allowed")


def _depth(obj: Any, limit: int, level: int = 0) -> None:
    if level > limit:
        raise WireError("too_deep", f"nesting deeper than {limit}")
    if isinstance(obj, dict):
        for v in obj.values():
            _depth(v, limit, level + 1)
    elif isinstance(obj, list):
        for v in obj:
            _depth(v, limit, level + 1)


def unpack(payload: bytes, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    if len(payload) > limits.max_bytes:
        raise WireError("oversized", f"{len(payload)} bytes > limit {limits.max_bytes}")
    try:
        obj = msgpack.unpackb(
            payload,
            raw=False,
            strict_map_key=True,
            ext_hook=_reject_ext,
            use_list=True,
            max_bin_len=limits.max_bytes,
            max_str_len=limits.max_str,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
        )
    except WireError:
        raise
    except Exception as e:  # msgpack raises many unrelated types on hostile input
        raise WireError("malformed", f"{type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise WireError("not_a_map", f"payload is a {type(obj).__name__}, expected a map")
    _depth(obj, limits.max_depth)
    return obj


def decode(
    frames: list[bytes], limits: Limits = DEFAULT_LIMITS, expect: tuple[str, ...] | None = None
) -> Message:
    """Decode `[topic, payload]`. `expect` restricts which topics a socket accepts."""
    if len(frames) != 2:
        raise WireError("frame_count", f"{len(frames)} frames, expected 2 (topic, payload)")
    try:
        topic = frames[0].decode("ascii")
    except UnicodeDecodeError:
        raise WireError("bad_topic", "topic is not ASCII") from None
    cls = MESSAGE_TYPES.get(topic)
    if cls is None or (expect is not None and topic not in expect):
        raise WireError("unknown_topic", f"topic {topic[:40]!r} not accepted here")
    m = unpack(frames[1], limits)
    try:
        return cls.from_map(m)
    except SchemaError as e:
        raise WireError("schema", str(e)) from None
    except (TypeError, ValueError) as e:
        raise WireError("schema", f"{topic}: {e}") from None


class RejectCounter(Counter):  # type: ignore[type-arg]
    """Reasons rejected frames were dropped, by code: exported in stats and metrics."""

    def add(self, err: WireError) -> None:
        self[err.reason] += 1
