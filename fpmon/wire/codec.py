"""Encode and decode wire frames with hard limits on untrusted bytes.

Every rejection is a `WireError` with a short `reason` code, for counting and logging: a
malformed peer costs a counted reason, never a crash or a silent drop. The typed schema
(`messages`) bounds every field; this module adds the frame-level checks (frame count, topic,
whole-payload size) and turns msgspec's errors into reasons.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any

import msgspec

from fpmon.wire.messages import MESSAGE_TYPES, Message


class WireError(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Limits:
    # Whole payload; records with probes fit well inside. Lengths of every string, list and
    # map inside are bounded by the schema itself (fpmon/wire/messages.py).
    max_bytes: int = 4 << 20


DEFAULT_LIMITS = Limits()
# Socket-level cap (ZMQ_MAXMSGSIZE) beside the payload limit: the topic frame and framing.
FRAME_SLACK = 4096

_ENCODER = msgspec.msgpack.Encoder()
_DECODERS: dict[str, msgspec.msgpack.Decoder[Any]] = {
    topic: msgspec.msgpack.Decoder(cls) for topic, cls in MESSAGE_TYPES.items()
}
_TOPICS = {topic.encode(): topic for topic in MESSAGE_TYPES}


def encode(msg: Message) -> list[bytes]:
    return [msg.TOPIC.encode(), _ENCODER.encode(msg)]


def payload(msg: Message) -> bytes:
    return _ENCODER.encode(msg)


def decode(
    frames: list[bytes], limits: Limits = DEFAULT_LIMITS, expect: tuple[str, ...] | None = None
) -> Message:
    """Decode `[topic, payload]`. `expect` restricts which topics a socket accepts."""
    if len(frames) != 2:
        raise WireError("frame_count", f"{len(frames)} frames, expected 2 (topic, payload)")
    raw_topic, data = frames
    topic = _TOPICS.get(bytes(raw_topic))
    if topic is None or (expect is not None and topic not in expect):
        shown = bytes(raw_topic)[:40]
        raise WireError("unknown_topic", f"topic {shown!r} not accepted here")
    if len(data) > limits.max_bytes:
        raise WireError("oversized", f"{len(data)} bytes > limit {limits.max_bytes}")
    try:
        msg: Message = _DECODERS[topic].decode(data)
    except msgspec.ValidationError as e:
        raise WireError("schema", f"{topic}: {e}") from None
    except msgspec.DecodeError as e:
        raise WireError("malformed", f"{topic}: {e}") from None
    return msg


class RejectCounter(Counter[str]):
    """Reasons rejected frames were dropped, by code: exported in stats and metrics.

    `add` and `snapshot` hold a lock: a socket's thread counts while another thread (status,
    metrics) reads, and copying a dict that grows a key meanwhile raises.
    """

    def __init__(self, *args: Any, **kwargs: int) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def add(self, err: WireError) -> None:
        self.count(err.reason)

    def count(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self[reason] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self)
