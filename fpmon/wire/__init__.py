"""The wire contract: every ZeroMQ message is [topic, msgpack map], defined once in `messages`."""

from fpmon.wire.codec import Limits, WireError, decode, encode
from fpmon.wire.messages import (
    MESSAGE_TYPES,
    SCHEMA_VERSION,
    Alert,
    Commit,
    Head,
    Message,
    OpenReply,
    OpenRequest,
    SubmitReply,
    SubmitRequest,
    Telemetry,
    Verdict,
)

__all__ = [
    "MESSAGE_TYPES", "SCHEMA_VERSION", "Alert", "Commit", "Head", "Limits", "Message",
    "OpenReply", "OpenRequest", "SubmitReply", "SubmitRequest", "Telemetry", "Verdict",
    "WireError", "decode", "encode",
]
