"""Covert rows: check an opened record's batch manifest (fpmon/manifest.py).

Every record of a batch lists every row the batch ran: the request id and the digest of the
authenticated client request behind it. On opening, the verifier checks

- the manifest against the record: as many rows as the declared batch and as the schedule's
  rows, the record's own row in its slot, naming its request and its client request's digest
  (the client's key and `submit` bytes, carried in the record), whose request id, token budget
  and prompt are the record's (text prompts through the reference tokenizer, `tokens`);
- every other row against the node's own commitments (`links`): row i of a record at seq s in
  slot k is the record at seq s - k + i, so the verifier's book of verified commits must hold a
  commit there naming the same request and the same manifest root.

A row with no client request behind it — a filler, an invented request no commitment names, a
manifest that contradicts the schedule or the declared batch — is `covert_rows`: work the node
ran and did not declare, whatever the numerics say.

What it cannot see: a node that runs extra rows and strips them from everything it records
(manifest, schedule, declared batch) leaves a consistent record; only the numerics (a batch-1
replay that does not reproduce it) and time or GPU activity remain as evidence. And the verifier
sees only what the node records: a request id and digest it can link to a commitment is a row
the node *declared*, served and committed, not proof that a client outside the node sent it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from fpmon.manifest import request_digest, root, submit_of
from fpmon.records import Record
from fpmon.wire import Commit
from fpmon.wire.messages import ManifestRow

Policy = Literal["require", "check", "off"]
WINDOW = 4096  # verified commits remembered per node, for linking rows to their siblings
LINK_WAIT_S = 2.0  # how long a judgement waits for sibling commits not yet verified
SHOWN = 8  # rows named one by one in a finding; the rest are counted

BLIND_SPOT = (
    "blind spot: a node that runs extra rows and strips them from everything it records "
    "(manifest, schedule, declared batch) leaves a consistent record, caught only by the "
    "numerics or by time and GPU activity; and a row linked to a commitment is a request the "
    "node declared, not proof that a client outside the node sent it"
)


class Sibling(NamedTuple):
    """What a verified commit says about its row of a batch: its request and its manifest root
    (with ids unique within a manifest, the two pin the commit to one row of one batch)."""

    request_id: str
    manifest: bytes


def _packed(c: Commit) -> bytes:
    # One bytes object per commit: bytes are invisible to the garbage collector, and the book
    # holds thousands per node. Retained commit structs (or even tuples) made the ingest loop
    # pay for collector passes: 0.77 (structs) and 0.90 (tuples) of its rate without a book.
    return bytes((len(c.manifest),)) + c.manifest + c.request_id.encode()


def _unpacked(v: bytes) -> Sibling:
    n = v[0]
    return Sibling(v[1 + n :].decode(), v[1 : 1 + n])


@dataclass
class _Node:
    rows: dict[int, bytes] = field(default_factory=dict)  # seq -> _packed(commit)
    high: int = -1  # highest seq verified


class RowBook:
    """The verifier's memory of recent verified commits per node, for linking rows.

    Written by the intake (the daemon's main thread) with every commit the chain check
    verified, read by the replay worker. On the ingest path, so no lock there: a dict store or
    get is atomic in CPython, and the writer only takes the condition's lock to wake a
    judgement waiting for a sibling (it reads `_waiting` after storing, the waiter counts
    itself before testing, so neither misses the other)."""

    def __init__(self, window: int = WINDOW) -> None:
        self.window = window
        self._nodes: dict[str, _Node] = {}
        self._cond = threading.Condition()
        self._waiting = 0

    def add(self, c: Commit) -> None:
        n = self._nodes.get(c.node)
        if n is None:
            n = self._nodes[c.node] = _Node()
        n.rows[c.seq] = _packed(c)
        n.rows.pop(c.seq - self.window, None)  # verified commits come in seq order
        if c.seq > n.high:
            n.high = c.seq
        if len(n.rows) > 2 * self.window:  # seqs that skipped (purged bodies, a new log)
            keep = sorted(n.rows)[-self.window :]
            n.rows = {s: n.rows[s] for s in keep}
        if self._waiting:
            with self._cond:
                self._cond.notify_all()

    def get(self, node: str, seq: int) -> Sibling | None:
        n = self._nodes.get(node)
        v = n.rows.get(seq) if n else None
        return None if v is None else _unpacked(v)

    def high(self, node: str) -> int:
        n = self._nodes.get(node)
        return n.high if n else -1

    def wait_for(self, node: str, seq: int, timeout_s: float) -> bool:
        """Wait until the node's verified chain reaches `seq`; False after `timeout_s`."""
        with self._cond:
            self._waiting += 1
            try:
                return self._cond.wait_for(lambda: self.high(node) >= seq, timeout_s)
            finally:
                self._waiting -= 1


@dataclass
class RowCheck:
    """Findings (covert rows: each one enough for the verdict) and notes (what could not be
    checked, and why: not findings)."""

    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pending_text: bool = False  # the prompt is text: `tokens` must check it with the engine

    @property
    def covert(self) -> bool:
        return bool(self.findings)


def _rows(ix: list[int]) -> str:
    shown = ", ".join(map(str, ix[:SHOWN]))
    return shown + (f" and {len(ix) - SHOWN} more" if len(ix) > SHOWN else "")


def check_record(rec: Record, policy: Policy = "require") -> RowCheck:
    """Everything the opened record alone says about its rows (no engine, no book)."""
    out = RowCheck()
    rows = rec.manifest
    if policy == "off":
        return out
    if rows is None:
        if policy == "require":
            out.findings.append(
                "the record carries no row manifest: none of its batch's rows is accounted for "
                "by a client request (an agent before manifests, or one hiding its rows)"
            )
        else:
            out.notes.append("no row manifest in the record: rows not checked")
        return out
    n, slot, batch = len(rows), rec.setup.slot, rec.setup.batch_size
    lengths = rec.schedule.get("row_lengths")
    outs = rec.schedule.get("output_lengths")
    # The schedule is the node's own map: a present key that is not a list is a finding, not
    # an exception (which would turn covert rows into an unsuspected `unverifiable`).
    for key, value in (("row_lengths", lengths), ("output_lengths", outs)):
        if value is not None and not isinstance(value, list):
            out.findings.append(f"the schedule's {key} is not a list of rows")
    lengths = lengths if isinstance(lengths, list) else None
    outs = outs if isinstance(outs, list) else None
    shape = [f"the record declares batch {batch}"]
    if isinstance(lengths, list):
        shape.append(f"its schedule {len(lengths)} rows")
    if isinstance(outs, list) and len(outs) != len(lengths or ()):
        shape.append(f"{len(outs)} output lengths")
    counts = {batch, n} | ({len(lengths)} if isinstance(lengths, list) else set())
    if isinstance(outs, list):
        counts.add(len(outs))
    if len(counts) > 1:
        out.findings.append(
            f"the manifest lists {n} row{'s' * (n != 1)}, but {' and '.join(shape)}"
        )
    if not 0 <= slot < n:
        out.findings.append(f"the record's slot {slot} is outside its manifest's {n} rows")
        return out
    fillers = [i for i, r in enumerate(rows) if not r.request_id and not r.digest]
    if fillers:
        out.findings.append(
            f"row{'s' * (len(fillers) != 1)} {_rows(fillers)} of {n} ran with no client "
            "request behind them (fillers)"
        )
    odd = [
        i
        for i, r in enumerate(rows)
        if i not in fillers and (not r.request_id or len(r.digest) != 32)
    ]
    if odd:
        out.findings.append(
            f"row{'s' * (len(odd) != 1)} {_rows(odd)}: no request id or no sha256 digest of a "
            "client request"
        )
    for what, key in (("request id", "request_id"), ("client request", "digest")):
        seen: dict[object, int] = {}
        dup = []
        for i, r in enumerate(rows):
            v = getattr(r, key)
            if i in fillers or not v:
                continue
            if v in seen:
                dup.append(f"{seen[v]}/{i}")
            seen.setdefault(v, i)
        if dup:
            out.findings.append(
                f"rows {', '.join(dup[:SHOWN])} name the same {what}: one request, two rows"
            )
    _own_row(rec, rows[slot], out)
    return out


def _own_row(rec: Record, own: ManifestRow, out: RowCheck) -> None:
    slot = rec.setup.slot
    if own.request_id != rec.request_id:
        out.findings.append(
            f"the record's own row {slot} names request {own.request_id[:64]!r}, not the "
            f"record's {rec.request_id[:64]!r}"
        )
    if rec.request is None:
        out.findings.append("the record does not carry its own client request")
        return
    if request_digest(rec.request) != own.digest:
        out.findings.append(
            f"row {slot}'s digest is not that of the client request the record carries"
        )
    try:
        submit = submit_of(rec.request)
    except ValueError as e:
        out.findings.append(f"row {slot}: {e}"[:1000])
        return
    if submit.request_id != rec.request_id:
        out.findings.append(
            f"row {slot}'s client request is request {submit.request_id[:64]!r}, not the "
            f"record's {rec.request_id[:64]!r}"
        )
    if len(rec.output_ids) > submit.max_tokens:
        out.findings.append(
            f"row {slot} generated {len(rec.output_ids)} tokens, its client asked for at most "
            f"{submit.max_tokens}"
        )
    if submit.prompt_ids is not None:
        if submit.prompt or list(submit.prompt_ids) != rec.prompt_ids:
            out.findings.append(f"row {slot}'s prompt tokens are not the token ids its client sent")
    else:
        out.pending_text = True


def check_tokens(rec: Record, encode: Callable[[str], list[int]], out: RowCheck) -> bool:
    """The own row's text prompt through the reference engine's tokenizer: False when the
    record's prompt tokens are not the client's prompt (a finding, added to `out`)."""
    if not out.pending_text or rec.request is None:
        return True
    out.pending_text = False
    try:
        prompt = submit_of(rec.request).prompt
    except ValueError:
        return True  # already a finding of check_record
    if encode(prompt) == rec.prompt_ids:
        return True
    out.findings.append(
        f"row {rec.setup.slot}'s prompt tokens are not its client's prompt as the "
        "reference tokenizer reads it"
    )
    return False


def check_links(
    rec: Record,
    book: RowBook | None,
    out: RowCheck,
    wait_s: float = LINK_WAIT_S,
) -> None:
    """Every other row against the node's own commitment at its seq."""
    rows = rec.manifest
    if rows is None or book is None:
        return
    slot, n = rec.setup.slot, len(rows)
    if not 0 <= slot < n:
        return
    first = rec.seq - slot
    me = root(rows)
    listed = [i for i, r in enumerate(rows) if i != slot and r.request_id and r.digest]
    if listed and first + listed[-1] <= book.high(rec.node) + n:
        # An honest batch's commitments go out together: the siblings are normally verified
        # before its opening is even answered. One bounded wait for the last of them, and only
        # for a batch within reach of the verified head: a row listed thousands of seqs ahead
        # would otherwise cost the one replay worker the whole wait per opened record.
        book.wait_for(rec.node, first + listed[-1], wait_s)
    unlinked: list[int] = []
    before: list[int] = []
    for i in listed:  # the record's own row is checked above; fillers are findings already
        row, seq = rows[i], first + i
        if seq < 0:
            out.findings.append(f"row {i} would be the record at seq {seq}: there is none")
            continue
        sib = book.get(rec.node, seq)
        if sib is None:
            (before if seq <= book.high(rec.node) else unlinked).append(i)
            continue
        why = []
        if sib.request_id != row.request_id:
            why.append(f"is for request {sib.request_id[:64]!r}")
        if sib.manifest != me:
            why.append("names another batch's manifest")
        if why:
            out.findings.append(
                f"row {i} names request {row.request_id[:64]!r}, but the node's commitment at "
                f"seq {seq} {' and '.join(why)}: no committed request stands behind row {i}"
            )
    if before:
        out.notes.append(
            f"rows {_rows(before)}: their commitments are outside what this verifier holds "
            "(before its window, or bodies the node purged): not linked"
        )
    if unlinked:
        out.notes.append(
            f"rows {_rows(unlinked)}: not committed when judged (the node's verified chain "
            f"ended at seq {book.high(rec.node)} after {wait_s:g} s): not linked"
        )


def reason(check: RowCheck) -> str:
    text = "covert rows: " + "; ".join(check.findings)
    return (
        text[:3000] + f". Rows the node ran without a client request are hidden work. {BLIND_SPOT}"
    )[:4096]
