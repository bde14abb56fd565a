"""Attribution: which alternative setup reproduces a mismatching record, nearest first.

Single-field changes are tried first (batch size with the request in slot 0, attention
implementation, dtype, compile), the field the evidence points at first (`hints`); once one
reproduces the record bit-exactly the rest of that field's values are tried (batch sizes >= 2
are often indistinguishable) and the search stops. Only if no single change is exact are pairs
of changes tried, within a budget. Every search ends with a status and a note: the exact
reproduction, or why there is none (budget spent, candidates shed at `max_candidates`, none of
them reproduces the record, none could be replayed).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from typing import Any

from fpmon.compare import Comparison, compare_records
from fpmon.errors import FpmonError, OverBudget
from fpmon.records import Record
from fpmon.replay.engines import EngineCache, Unverifiable
from fpmon.replay.hints import field_order, hidden_dtype
from fpmon.replay.scoring import first_difference, score
from fpmon.reproduce import replay_record
from fpmon.setups import ATTN_IMPLS, DTYPES, Setup
from fpmon.tensors import FLOAT_DTYPES, Blob
from fpmon.wire import Candidate
from fpmon.wire.messages import AttributionStatus

Change = dict[str, Any]
BUDGET_SPENT = "not tried: the record's replay budget (max_replay_s) was spent"


def single_changes(
    declared: Setup, fields: tuple[str, ...], batch_sizes: tuple[int, ...]
) -> list[tuple[str, Change]]:
    out: list[tuple[str, Change]] = []
    for f in fields:
        if f == "batch_size":
            out += [
                (f, {"batch_size": b, "slot": 0}) for b in batch_sizes if b != declared.batch_size
            ]
        elif f == "attn_impl":
            out += [(f, {"attn_impl": a}) for a in ATTN_IMPLS if a != declared.attn_impl]
        elif f == "dtype":
            out += [(f, {"dtype": d}) for d in DTYPES if d != declared.dtype]
        elif f == "compiled":
            other = declared.with_compiled(not declared.compiled)
            out.append((f, {"compiled": other.compiled, "compile_mode": other.compile_mode}))
    return out


def pair_changes(singles: list[tuple[str, Change]]) -> list[tuple[str, Change]]:
    return [
        (f"{fa}+{fb}", {**ca, **cb})
        for (fa, ca), (fb, cb) in itertools.combinations(singles, 2)
        if fa != fb
    ]


def cast_probes(rec: Record, dtypes: dict[str, str]) -> Record:
    """`rec` with its float probes cast to `dtypes[name]`, as a node hiding its dtype casts
    them (exact: each value is held exactly in float64, so one rounding, as torch does it)."""
    import torch

    probes = dict(rec.probes)
    for name, blob in rec.probes.items():
        want = dtypes.get(name, blob.dtype)
        if want == blob.dtype or want not in FLOAT_DTYPES or blob.dtype not in FLOAT_DTYPES:
            continue
        t = torch.from_numpy(blob.as_float64().copy()).to(getattr(torch, want))
        probes[name] = Blob.from_torch(t)
    return dataclasses.replace(rec, probes=probes)


def cast_like(rep: Record, record: Record) -> Record:
    return cast_probes(rep, {name: b.dtype for name, b in record.probes.items()})


def try_setup(
    engines: EngineCache, record: Record, changes: Change, deadline: float | None = None
) -> dict[str, Any]:
    setup = record.setup.replace(**changes)
    engine = engines.get(record.model, setup, record.weights_digest)
    bs = changes.get("batch_size")
    slot = changes.get("slot") if bs else None
    rep = replay_record(engine, record, batch_size=bs, slot=slot, deadline=deadline)
    if "dtype" in changes:
        rep = cast_like(rep, record)
    comp = compare_records(record, rep)
    return {
        "exact": comp.identical,
        "score": score(comp),
        "identical_probes": sum(p.identical for p in comp.probes),
        "probes": len(comp.probes),
        "first_diff": first_difference(comp),
    }


@dataclasses.dataclass
class Attribution:
    """The candidates tried (exact first, then nearest) and how the search ended.

    `status` is a `wire.AttributionStatus`; `note` says it in words for the verdict, and why
    no exact setup is named when none is.
    """

    candidates: list[Candidate]
    status: AttributionStatus
    note: str


def _changes_text(c: Candidate) -> str:
    return ", ".join(f"{k}={v}" for k, v in c.changes.items()) or c.field


def _nearest(tried: list[Candidate]) -> str:
    if not tried:
        return "no candidate was replayed to the end"
    best = tried[0]
    return f"nearest {_changes_text(best)} (score {best.score:.3g})"


def outcome(
    candidates: list[Candidate], total: int, max_candidates: int, fields: list[str]
) -> tuple[AttributionStatus, str]:
    """(status, note) for `candidates` (as `attribute` orders them) out of `total` possible."""
    tried = [c for c in candidates if c.score is not None]
    failed = [c for c in candidates if c.score is None and c.error != BUDGET_SPENT]
    if tried and tried[0].exact:
        return "exact", f"reproduced bit-exactly by {_changes_text(tried[0])}"
    over = ", ".join(fields) or "no fields"
    if total == 0:
        return "no_candidates", f"the attribution fields ({over}) give no candidate setup"
    if any(c.error == BUDGET_SPENT for c in candidates):
        return "budget", (
            f"no exact reproduction: attribution stopped at the record's replay budget "
            f"(max_replay_s) after {len(tried) + len(failed)} of {total} candidates; "
            f"{_nearest(tried)}"
        )
    if len(candidates) >= max_candidates and len(candidates) < total:
        return "cap", (
            f"no exact reproduction among the {len(candidates)} candidates tried: "
            f"max_candidates={max_candidates} shed the other {total - len(candidates)}; "
            f"{_nearest(tried)}"
        )
    if not tried:
        first = failed[0].error if failed else "no candidate ran"
        return "failed", f"no candidate setup could be replayed ({len(failed)} tried): {first}"
    return "nearest", (
        f"no candidate explains it: none of the {len(tried)} setups tried (one or two changes "
        f"of {over}) reproduces the record; {_nearest(tried)}"
    )


def attribute(
    engines: EngineCache,
    record: Record,
    fields: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    max_candidates: int = 16,
    comparison: Comparison | None = None,
    deadline: float | None = None,
) -> Attribution:
    """Candidates tried, exact reproductions first then nearest; each names the field changed.

    `comparison` (the declared replay against the record) orders the fields: see `hints`.
    `deadline` (time.monotonic()): candidates count against the record's replay budget; the
    search stops at it, and the candidate it stopped at is listed with `error` saying so.
    The result says how the search ended (`Attribution.status`, `.note`) in every case.
    """
    order = field_order(record, comparison, fields)
    singles = single_changes(record.setup, tuple(order), batch_sizes)
    dtype = hidden_dtype(record)
    if dtype:  # the dtype the probes betray goes first among dtype candidates
        singles.sort(key=lambda fc: fc[0] == "dtype" and fc[1].get("dtype") != dtype)
    every = singles + pair_changes(singles)
    results: list[Candidate] = []
    exact_field = ""
    for field, changes in every:
        if len(results) >= max_candidates:
            break
        if exact_field and field != exact_field:
            break
        if "+" in field and any(r.exact for r in results):
            break
        if deadline is not None and time.monotonic() > deadline:
            results.append(Candidate(field=field, changes=changes, error=BUDGET_SPENT))
            break
        try:
            res = try_setup(engines, record, changes, deadline)
        except OverBudget:
            results.append(Candidate(field=field, changes=changes, error=BUDGET_SPENT))
            break
        except (Unverifiable, FpmonError) as e:
            results.append(Candidate(field=field, changes=changes, error=str(e)[:200]))
            continue
        results.append(Candidate(field=field, changes=changes, **res))
        if res["exact"] and not exact_field:
            exact_field = field
    tried = [r for r in results if r.score is not None]
    failed = [r for r in results if r.score is None]
    tried.sort(key=lambda r: (not r.exact, r.score))
    ordered = tried + failed
    status, note = outcome(ordered, len(every), max_candidates, order)
    return Attribution(ordered, status, note)
