"""The wire contract: every ZeroMQ message is [topic, msgpack map], defined once in `messages`."""

from fpmon.wire.codec import Limits, WireError, decode, encode
from fpmon.wire.messages import (
    ALERT_KINDS,
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    STATUSES,
    Alert,
    Commit,
    Head,
    Message,
    OpenReply,
    OpenRequest,
    StateReply,
    StateRequest,
    SubmitReply,
    SubmitRequest,
    Telemetry,
    Verdict,
)

__all__ = [
    "ALERT_KINDS",
    "MESSAGE_TYPES",
    "SCHEMA_VERSION",
    "STATUSES",
    "Alert",
    "Commit",
    "Head",
    "Limits",
    "Message",
    "OpenReply",
    "OpenRequest",
    "StateReply",
    "StateRequest",
    "SubmitReply",
    "SubmitRequest",
    "Telemetry",
    "Verdict",
    "WireError",
    "decode",
    "encode",
]
