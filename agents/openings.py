"""Openings: reveal a record exactly as committed, or say `purged` / `unknown` / `error`.

A body that no longer hashes to its committed digest is never revealed: served as `ok`, a bad
disk would be indistinguishable from a node tampering with its records.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from fpmon.agents.heads import HeadSigner
from fpmon.agents.republish import rebuild
from fpmon.agents.store import RecordLog, StoreError
from fpmon.wire import Link, LinksReply, LinksRequest, OpenReply, OpenRequest

CORRUPT_BODY = "record body corrupted at rest (digest mismatch)"


@dataclass(frozen=True)
class Opened:
    reply: OpenReply
    fault: str = ""  # a counted reason when the node, not the request, is at fault


def open_record(store: RecordLog, req: OpenRequest, node: str) -> Opened:
    try:
        status, data = store.get(req.seq)
    except StoreError as e:
        return _error(req, node, "store_error", f"record log unreadable: {e}")
    if status == "corrupt":
        why = (
            f"{CORRUPT_BODY}: the stored bytes of record {req.seq} no longer hash to the "
            "committed digest, so they are not served; the node logged the fault"
        )
        return _error(req, node, "corrupt_body", why)
    reason = ""
    if status == "purged":
        reason = "record body removed by retention (size/age); its commitment stands"
    elif status == "unknown":
        reason = f"no record {req.seq} on this node (head is {store.head_of_disk()})"
    reply = OpenReply(
        node=node,
        t=time.time(),
        seq=req.seq,
        nonce=req.nonce,
        status=status,
        record=data,
        reason=reason,
    )
    return Opened(reply)


def _error(req: OpenRequest, node: str, fault: str, reason: str) -> Opened:
    reply = OpenReply(
        node=node, t=time.time(), seq=req.seq, nonce=req.nonce, status="error", reason=reason
    )
    return Opened(reply, fault)


def answer(store: RecordLog, req: OpenRequest, node: str) -> OpenReply:
    return open_record(store, req, node).reply


def answer_links(store: RecordLog, req: LinksRequest, node: str, signer: HeadSigner) -> LinksReply:
    """The chain from `req.first`, from this node's own log, with a head signed over its end.

    The verifier asks when commits it should have seen never arrived (lost in a hub restart,
    a crash, a flood): answering lets it repair the hole instead of finding a gap. A purged or
    damaged body leaves its link without a commitment: the chain still stands.
    """

    def reply(**kw: Any) -> LinksReply:
        return LinksReply(node=node, t=time.time(), nonce=req.nonce, first=req.first, **kw)

    try:
        rows = store.rows(req.first, req.count)
        log_head = store.head_of_disk()
    except StoreError as e:
        return reply(status="error", reason=f"record log unreadable: {e}"[:1000])
    links = [
        Link(
            seq=r.seq,
            record_digest=r.digest,
            chain=r.chain,
            commit=rebuild(node, r) if r.data is not None else None,
        )
        for r in rows
    ]
    if not links:
        why = f"no record from seq {req.first} on this node (head is {log_head})"
        return reply(status="unknown", log_head=log_head, reason=why)
    head = signer.head(links[-1].seq, links[-1].chain)
    return reply(status="ok", links=links, head=head, log_head=log_head)
