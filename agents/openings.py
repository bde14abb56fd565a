"""Openings: reveal a record exactly as committed, or say `purged` / `unknown` explicitly."""

from __future__ import annotations

import time

from agents.redteam import RedTeam
from agents.store import RecordLog
from fpmon.wire import OpenReply, OpenRequest


def answer(store: RecordLog, req: OpenRequest, node: str, redteam: RedTeam) -> OpenReply:
    status, data = store.get(req.seq)
    reason = {
        "purged": "record body removed by retention (size/age); its commitment stands",
        "unknown": f"no record {req.seq} on this node (head is {store.head_of_disk()})",
    }.get(status, "")
    if data is not None:
        data = redteam.tamper(data)
    return OpenReply(
        node=node,
        t=time.time(),
        seq=req.seq,
        nonce=req.nonce,
        status=status,
        record=data,
        reason=reason,
    )
