"""Replay cost caps: what the verifier refuses to replay, checked before any replay runs.

A node chooses the work its records declare, so the cost of verifying them is the node's to
choose too: a record declaring batch 2048 took 13 s and 1.2 GB to replay. Beyond a cap the
verdict is `unverifiable` and names the cap; the daemon alerts (warning) and samples the node
at the suspect rate, as a node declaring huge work to dodge replay should be visible.
The caps are checked twice: on the commitment (before the record is stored or queued) and on
the opened record (a commitment may omit setup fields the record then declares).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fpmon.records import Record
from fpmon.wire import Commit


@dataclass(frozen=True)
class Caps:
    max_batch: int = 256
    max_tokens: int = 32768  # prompt + output of one row
    max_replay_s: float = 120.0  # wall clock for one record: its replay and its attribution


def _ints(value: Any) -> list[int]:
    """`value` as a list of ints, or [] when it is not one (the replay then refuses it)."""
    if not isinstance(value, list) or not all(type(x) is int for x in value):
        return []
    return list(value)


def _over(caps: Caps, batch: int, tokens: int, where: str) -> str:
    if batch > caps.max_batch:
        return (
            f"{where} batch size {batch} is over the replay cap max_batch={caps.max_batch}: "
            "not replayed"
        )
    if tokens > caps.max_tokens:
        return (
            f"{where} {tokens} tokens (prompt + output) are over the replay cap "
            f"max_tokens={caps.max_tokens}: not replayed"
        )
    return ""


def over_commit(commit: Commit, caps: Caps) -> str:
    """Why the commitment's declared work is beyond a cap; "" when it is within every cap."""
    batch = commit.setup.get("batch_size", 1)
    batch = batch if type(batch) is int else 1  # not an int: the record's own check decides
    return _over(caps, batch, commit.prompt_tokens + commit.output_tokens, "declared")


def over_record(rec: Record, caps: Caps) -> str:
    """The same on the opened record, whose schedule is what the replay rebuilds: every row
    of the batch counts, not only the request's (fillers as long as a row may be)."""
    rows = _ints(rec.schedule.get("row_lengths"))
    outs = _ints(rec.schedule.get("output_lengths")) or [len(rec.output_ids)]
    batch = max(rec.setup.batch_size, len(rows))
    tokens = max(len(rec.prompt_ids) + len(rec.output_ids), max(rows, default=0) + max(outs))
    return _over(caps, batch, tokens, "record's")
