"""Openings: reveal a record exactly as committed, or say `purged` / `unknown` explicitly."""

from __future__ import annotations

import time

from agents.heads import HeadSigner
from agents.redteam import RedTeam
from agents.store import RecordLog
from fpmon.records import Record
from fpmon.wire import Commit, Link, LinksReply, LinksRequest, OpenReply, OpenRequest


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


def commit_of(node: str, seq: int, digest: bytes, chain: bytes, rec: Record) -> Commit:
    """The commitment of a logged record, rebuilt from its body (what was published, but for
    the publication time, which becomes the record's end time)."""
    return Commit(
        node=node,
        t=rec.t_end,
        seq=seq,
        request_id=rec.request_id,
        record_digest=digest,
        chain=chain,
        setup=rec.setup.to_map(),
        model=rec.model,
        prompt_tokens=len(rec.prompt_ids),
        output_tokens=len(rec.output_ids),
        prefill_s=rec.timings.get("prefill_s", 0.0),
        decode_s=rec.timings.get("decode_s", 0.0),
    )


def answer_links(store: RecordLog, req: LinksRequest, node: str, signer: HeadSigner) -> LinksReply:
    """The chain from `req.first`, from this node's own log, with a head signed over its end.

    The verifier asks when commits it should have seen never arrived (lost in a hub restart,
    a crash, a flood): answering lets it repair the hole instead of finding a gap.
    """
    links = []
    for seq, digest, chain, body in store.links(req.first, req.count):
        commit = None
        if body is not None:
            try:
                commit = commit_of(node, seq, digest, chain, Record.decode(body))
            except ValueError:
                commit = None  # a body that no longer decodes: the link still stands
        links.append(Link(seq=seq, record_digest=digest, chain=chain, commit=commit))
    log_head = store.head_of_disk()
    base = {"node": node, "t": time.time(), "nonce": req.nonce, "first": req.first}
    if not links:
        why = f"no record from seq {req.first} on this node (head is {log_head})"
        return LinksReply(**base, status="unknown", log_head=log_head, reason=why)
    last = links[-1]
    head = signer.head(last.seq, last.chain)
    return LinksReply(**base, status="ok", links=links, head=head, log_head=log_head)
