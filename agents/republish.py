"""The logged tail a restart republishes: commitments durable in the log but maybe never sent.

An agent killed between its log transaction and the publisher leaves records that subscribers
never saw, which a verifier reads as a gap. On start the agent rebuilds the commitments after
the last signed head it published (at most `limit`) from the log and sends them again.
Subscribers that already had some drop them as duplicates.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgpack

from fpmon.agents.store import LoggedRow, RecordLog
from fpmon.canonical import digest as record_digest
from fpmon.logs import fields
from fpmon.manifest import decode_manifest, root
from fpmon.wire import Commit

log = logging.getLogger("fpmon.agent.republish")


@dataclass(frozen=True)
class Tail:
    first_seq: int  # the first seq looked at (-1: nothing to look at)
    commits: list[Commit] = field(default_factory=list)
    purged: int = 0  # bodies gone: no commit to rebuild; the next signed head covers them
    corrupt: int = 0  # bodies that no longer match their digest: not republished


def logged_tail(store: RecordLog, node: str, limit: int) -> Tail:
    """Commitments after the last published head (never marked: the last `limit`)."""
    if limit <= 0:
        return Tail(-1)
    marked = store.published_head()
    rows = store.rows_after(-1 if marked is None else marked, limit)
    if not rows:
        return Tail(-1)
    commits, purged, corrupt = [], 0, 0
    for row in rows:
        if row.data is None:
            purged += 1
        elif (c := rebuild(node, row)) is None:
            corrupt += 1
        else:
            commits.append(c)
    return Tail(rows[0].seq, commits, purged, corrupt)


def rebuild(node: str, row: LoggedRow) -> Commit | None:
    """The Commit `worker._commit` published for this row, from the record it logged."""
    assert row.data is not None
    if record_digest(row.data) != row.digest:
        log.error("not republishing a damaged record", extra=fields(seq=row.seq))
        return None
    try:
        m: dict[str, Any] = msgpack.unpackb(row.data, raw=False)
        timings = m.get("timings", {})
        return Commit(
            node=node,
            t=row.t,  # when it became durable, as close to the original commitment as the log knows
            seq=row.seq,
            request_id=m["request_id"],
            record_digest=row.digest,
            chain=row.chain,
            setup=m["setup"],
            model=m["model"],
            prompt_tokens=len(m["prompt_ids"]),
            output_tokens=len(m["output_ids"]),
            prefill_s=float(timings.get("prefill_s", 0.0)),
            decode_s=float(timings.get("decode_s", 0.0)),
            manifest=root(decode_manifest(m["manifest"])) if "manifest" in m else b"",
        )
    except (ValueError, KeyError, TypeError) as e:  # committed bytes that are no record
        log.error("not republishing an unreadable record", extra=fields(seq=row.seq, error=str(e)))
        return None
