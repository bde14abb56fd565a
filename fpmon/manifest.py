"""Row manifests: every row a batch ran, and the client request behind each one.

A node can run rows beside the requests it declares (the filler rows of a larger batch than it
declares, or work it does not declare at all) and, on a GPU, batch-8 kernels often compute the
same bits as batch 1, so the numerics alone miss it. So every record of a batch carries the
batch's manifest: per row the request id and the digest of the authenticated client request
behind it, or an empty row where no client asked for one. The record's own row also carries
that request (`ClientRequest`: the client's Curve key and its `submit` bytes), so a verifier
that opens one record can check its row against the client's bytes and the other rows against
their own commitments (`replay/rows.py`). Every commit of the batch names the manifest's root.

Shared by the agent (which builds manifests), the test fleet and the verifier (which checks them).
"""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import msgspec

from fpmon import canonical
from fpmon.wire import Limits, SubmitRequest, WireError, decode
from fpmon.wire.codec import payload
from fpmon.wire.messages import MAX_ROWS, ClientRequest, ManifestRow

REQUEST_DOMAIN = b"fpmon-request-v1\0"
MANIFEST_DOMAIN = b"fpmon-manifest-v1\0"
FILLER = ManifestRow()  # a row no client request stands behind

__all__ = [
    "FILLER",
    "MAX_ROWS",
    "ClientRequest",
    "ManifestRow",
    "batch",
    "decode_manifest",
    "decode_request",
    "request_digest",
    "request_map",
    "root",
    "row_for",
    "submit_of",
    "to_maps",
    "token_request",
]

_Rows = Annotated[list[ManifestRow], msgspec.Meta(max_length=MAX_ROWS)]


def request_digest(req: ClientRequest) -> bytes:
    """sha256 over the authenticated client's key and the exact bytes it sent."""
    client = req.client.encode()
    return hashlib.sha256(
        REQUEST_DOMAIN + struct.pack(">H", len(client)) + client + req.submit
    ).digest()


def row_for(request_id: str, req: ClientRequest) -> ManifestRow:
    return ManifestRow(request_id=request_id, digest=request_digest(req))


def root(rows: Sequence[ManifestRow] | None) -> bytes:
    """What a commit names: b"" for a record without a manifest."""
    if rows is None:
        return b""
    packed = canonical.pack([[r.request_id, r.digest] for r in rows])
    return hashlib.sha256(MANIFEST_DOMAIN + packed).digest()


def decode_manifest(value: Any) -> tuple[ManifestRow, ...]:
    """A record's `manifest` field, through the wire's bounds: at most MAX_ROWS rows, ids and
    digests of bounded length. Anything else raises ValueError (the record is malformed)."""
    try:
        return tuple(msgspec.convert(value, _Rows, builtin_types=(bytes,)))
    except msgspec.ValidationError as e:
        raise ValueError(f"manifest: {e}") from None


def decode_request(value: Any) -> ClientRequest:
    try:
        return msgspec.convert(value, ClientRequest, builtin_types=(bytes,))
    except msgspec.ValidationError as e:
        raise ValueError(f"request: {e}") from None


def submit_of(req: ClientRequest) -> SubmitRequest:
    """The client's `submit` message inside a record, decoded with the wire's own checks."""
    try:
        msg = decode(
            [SubmitRequest.TOPIC.encode(), req.submit],
            Limits(max_bytes=len(req.submit)),
            expect=(SubmitRequest.TOPIC,),
        )
    except WireError as e:
        raise ValueError(f"the client request is not a submit message ({e})") from None
    assert isinstance(msg, SubmitRequest)
    return msg


def token_request(
    request_id: str, prompt_ids: Sequence[int], max_tokens: int, *, client: str = ""
) -> ClientRequest:
    """What an agent's intake holds for a token-level client's `submit` (no Curve: no key).
    For provers built without an agent: the test fleet, benchmarks."""
    msg = SubmitRequest(
        node="client",
        t=time.time(),
        request_id=request_id,
        prompt="",
        prompt_ids=list(prompt_ids),
        max_tokens=max_tokens,
    )
    return ClientRequest(client=client, submit=payload(msg))


def batch(
    requests: Sequence[tuple[str, ClientRequest]], rows: int, slots: Sequence[int] = ()
) -> tuple[ManifestRow, ...]:
    """The manifest of a batch of `rows` rows whose requests sit in `slots` (default: the
    first rows, in order); every other row a filler."""
    out = [FILLER] * rows
    for (rid, req), at in zip(requests, slots or range(len(requests)), strict=True):
        out[at] = row_for(rid, req)
    return tuple(out)


def to_maps(rows: Iterable[ManifestRow]) -> list[dict[str, Any]]:
    """Rows as a record stores them: both fields always present (a filler's are empty)."""
    return [{"request_id": r.request_id, "digest": r.digest} for r in rows]


def request_map(req: ClientRequest) -> dict[str, Any]:
    return {"client": req.client, "submit": req.submit}
