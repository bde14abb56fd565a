"""Judge one opened record: check it against its commitment, replay it faithfully, compare.

Before any replay, the record's batch manifest is checked (replay/rows.py): rows with no client
request behind them are `covert_rows`, whatever the numerics would say. Then:
bit-identical -> match; same device class and software -> anything else is a mismatch; another
GPU (or other software) -> per-probe comparison against the calibrated band of that pair ->
within_noise or mismatch, and the verdict says it is cross-device. Without a band for the pair
the judge demands bit-exactness and says so. Every mismatch gets an attribution or says why
none (`evidence.attribution_status`, `.attribution_note`).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import msgspec

from fpmon.compare import Comparison, compare_records, greedy_violations
from fpmon.errors import FpmonError, OverBudget
from fpmon.manifest import root
from fpmon.records import TOPK_IDS, Record
from fpmon.replay import cputime
from fpmon.replay.attribution import BUDGET_SPENT, attribute
from fpmon.replay.calibration import Band, Calibration
from fpmon.replay.engines import EngineCache, Unverifiable, device_class
from fpmon.replay.limits import Caps, over_commit, over_record
from fpmon.replay.rows import (
    LINK_WAIT_S,
    Policy,
    RowBook,
    RowCheck,
    check_links,
    check_record,
    check_tokens,
)
from fpmon.replay.rows import reason as covert_reason
from fpmon.replay.scoring import first_difference, probe_evidence, score
from fpmon.reproduce import replay_record
from fpmon.wire import Candidate, Commit, Evidence, Verdict
from fpmon.wire.messages import AttributionStatus, Status

SOFTWARE_FIELDS = ("engine", "engine_version", "torch_version", "cuda_version")


@dataclass
class Judgement:
    verdict: Verdict
    reference_s: float = 0.0  # the reference's own prefill+decode time for the declared setup
    committed_s: float = 0.0  # what the node committed it spent
    tokens: int = 0
    commit_t: float = 0.0  # when the node committed it: the start of commit-to-verdict latency
    jitter_rel: float | None = None  # the pair's calibrated timing jitter, when known
    # GPM activity-seconds on the reference GPU during the faithful replay (accounting.py);
    # None: not measured (a CPU reference, no GPM)
    activity: dict[str, float] | None = None
    # This process's CPU-seconds during the faithful replay (replay/cputime.py): what the
    # declared work costs a CPU engine, for nodes without GPUs
    cpu_s: float | None = None
    # The opened record's output tokens (a faithful replay only): what the node committed it
    # served, held against what a verifier's challenge was served (replay/challenges.py).
    output_ids: tuple[int, ...] | None = None
    notes: list[str] = field(default_factory=list)
    # An `unverifiable` the node chose (work beyond the caps, a model or setup the verifier has
    # no reference for): the daemon alerts it as a warning and samples the node more.
    suspect: bool = False


@dataclass
class JudgeOptions:
    attribution: bool = True
    fields: tuple[str, ...] = ("batch_size", "attn_impl", "dtype", "compiled")
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8)
    max_candidates: int = 16
    caps: Caps = field(default_factory=Caps)
    # Row manifests (replay/rows.py): "require" (a record without one is covert_rows),
    # "check" (checked where present), "off".
    manifests: Policy = "require"
    link_wait_s: float = LINK_WAIT_S
    node_manifests: dict[str, Policy] = field(default_factory=dict)  # per node, over the above


def verdict_for(commit: Commit, status: Status, **kw: Any) -> Verdict:
    """A verdict on a committed record: identity and declared setup from the commitment."""
    return Verdict(
        node=commit.node,
        t=time.time(),
        seq=commit.seq,
        status=status,
        request_id=commit.request_id,
        declared=dict(commit.setup),
        **kw,
    )


def contradictions(commit: Commit, rec: Record) -> list[str]:
    """Where the opened record disagrees with what was committed (a bad opening)."""
    bad = []
    for name, mine in (
        ("node", rec.node),
        ("seq", rec.seq),
        ("request_id", rec.request_id),
        ("model", rec.model),
        ("prompt_tokens", len(rec.prompt_ids)),
        ("output_tokens", len(rec.output_ids)),
    ):
        if getattr(commit, name) != mine:
            bad.append(name)
    declared = rec.setup.to_map()
    bad += [f"setup.{k}" for k, v in commit.setup.items() if declared.get(k) != v]
    if commit.manifest != root(rec.manifest):
        bad.append("manifest")
    return bad


def within_band(comp: Comparison, band: Band) -> tuple[bool, list[str]]:
    over = []
    for p in comp.probes:
        if p.probe == TOPK_IDS or p.identical:
            continue  # near-tie reorderings of top-k ids are expected inside the band
        limit = band.limit(p.probe)
        worst = max(p.per_position_rel, default=p.rel)
        if limit is None or worst > limit:
            over.append(p.probe)
    return not over, over


class Judge:
    def __init__(
        self,
        engines: EngineCache,
        calibration: Calibration,
        options: JudgeOptions | None = None,
        name: str = "replay",
    ) -> None:
        self.engines = engines
        self.calibration = calibration
        self.options = options or JudgeOptions()
        self.name = name
        self.meter: Any = None  # replay.accounting.ReferenceMeter, set by the daemon
        # The intake's verified commits, for linking a record's rows to their siblings' own
        # commitments (set by the daemon; None: rows are checked against the record alone).
        self.rows: RowBook | None = None

    def _verdict(self, commit: Commit, status: Status, **kw: Any) -> Verdict:
        return verdict_for(commit, status, **kw)

    def _unverifiable(self, commit: Commit, reason: str, suspect: bool) -> Judgement:
        if suspect:
            reason += (
                "; an honest node declares work its verifier can check, so this node is "
                "sampled at the suspect rate"
            )
        v = self._verdict(commit, "unverifiable", reason=reason, reference=self.engines.reference)
        return Judgement(v, suspect=suspect)

    def _covert(self, commit: Commit, rows: RowCheck) -> Judgement:
        v = self._verdict(
            commit,
            "covert_rows",
            reason=covert_reason(rows),
            reference=self.engines.reference,
            evidence=Evidence(notes=[f[:4096] for f in (rows.findings + rows.notes)[:64]]),
        )
        return Judgement(v, suspect=True)

    def precheck(self, commit: Commit) -> Judgement | None:
        """The verdict on a commitment whose declared work is beyond the caps, else None:
        decided before its record is decoded, stored or queued, so it costs nothing more."""
        over = over_commit(commit, self.options.caps)
        return self._unverifiable(commit, over, True) if over else None

    def judge(self, commit: Commit, data: bytes) -> Judgement:
        refused = self.precheck(commit)
        if refused is not None:
            return refused
        caps = self.options.caps
        try:
            rec = Record.decode(data)
        except ValueError as e:
            return Judgement(
                self._verdict(
                    commit,
                    "bad_opening",
                    reason=f"opened bytes match the digest but are not a record: {e}"[:300],
                )
            )
        bad = contradictions(commit, rec)
        if bad:
            return Judgement(
                self._verdict(
                    commit,
                    "bad_opening",
                    reason=f"record contradicts its commitment in {', '.join(bad)}",
                )
            )
        over = over_record(rec, caps)
        if over:
            return self._unverifiable(commit, over, True)
        policy = self.options.node_manifests.get(commit.node, self.options.manifests)
        rows = check_record(rec, policy)
        if policy != "off":
            check_links(rec, self.rows, rows, self.options.link_wait_s)
        if rows.covert:  # nothing to replay: the record itself says rows are unaccounted for
            return self._covert(commit, rows)
        reference = self.engines.reference
        # One wall-clock budget for the record: its faithful replay and every attribution
        # candidate (a mismatching record must not buy unbounded candidate replays either).
        deadline = time.monotonic() + caps.max_replay_s
        try:
            engine = self.engines.get(rec.model, rec.setup, rec.weights_digest)
            if not check_tokens(rec, engine.encode, rows):
                return self._covert(commit, rows)
            meter = self.meter.measure() if self.meter is not None else nullcontext(None)
            with meter as activity, cputime.measure() as cpu:
                t0 = time.perf_counter()
                rep = replay_record(engine, rec, deadline=deadline)
                replay_s = time.perf_counter() - t0
        except OverBudget as e:
            why = f"replay ran past the cap max_replay_s={caps.max_replay_s:g} s ({e})"
            return self._unverifiable(commit, why, True)
        except Unverifiable as e:
            return self._unverifiable(commit, str(e), e.node_fault)
        except FpmonError as e:
            return self._unverifiable(commit, str(e), False)
        committed_s = commit.prefill_s + commit.decode_s or sum(rec.timings.values())
        out = Judgement(
            self._verdict(commit, "match"),
            sum(rep.timings.values()),
            committed_s,
            len(rec.prompt_ids) + len(rec.output_ids),
            activity=activity or None,
            cpu_s=cpu["cpu_s"],
            output_ids=tuple(rec.output_ids),
        )
        try:
            comp = compare_records(rec, rep)
        except FpmonError as e:
            out.verdict = self._verdict(
                commit,
                "mismatch",
                reason=str(e),
                replay_s=replay_s,
                reference=reference,
                evidence=Evidence(
                    attribution_status="not_comparable",
                    attribution_note="not attributed: the replay could not be compared with the "
                    "record (see the reason), so no candidate could be either",
                ),
            )
            return out
        prover = device_class(rec.setup)
        software = [f for f in SOFTWARE_FIELDS if getattr(rec.setup, f) != getattr(engine.setup, f)]
        cross = prover != reference or bool(software)
        band = self.calibration.band(prover, reference, rec.weights_digest) if cross else None
        evidence = Evidence(
            mode="band" if band else "exact",
            pair=f"{prover}|{reference}",
            score=score(comp),
            first_diff=first_difference(comp),
            notes=[*comp.notes, *rows.notes][:64],
            probes=probe_evidence(comp, band),
        )
        reason = ""
        if cross:
            why = f"prover {prover}, reference {reference}"
            if software:
                why += f"; software differs in {', '.join(software)}"
            reason = f"cross-device verdict ({why})"
            if band is None:
                reason += ": no calibration for this pair, bit-exactness demanded"
        status: Status
        if comp.identical:
            status = "match"
        elif band is not None:
            ok, over_band = within_band(comp, band)
            status = "within_noise" if ok else "mismatch"
            evidence = msgspec.structs.replace(evidence, over_band=over_band)
        else:
            status = "mismatch"
        not_greedy = greedy_violations(rep)
        numerics_differ = status == "mismatch"
        if not_greedy:
            evidence = msgspec.structs.replace(evidence, not_greedy=not_greedy)
        if not_greedy and not numerics_differ:
            # The computation replayed, but the tokens served are not what it chose.
            status = "mismatch"
            reason = (
                f"served tokens at positions {', '.join(map(str, not_greedy[:8]))} are not the "
                "greedy choice of the replayed logits"
            )
        attribution: list[Candidate] = []
        att_status: AttributionStatus = ""
        att_note = ""
        if status == "mismatch" and not numerics_differ:
            att_status = "tokens"
            att_note = (
                "not attributed: the declared setup reproduces the computation (bit-exactly or "
                "within the band); the served tokens are not its greedy choice, which no setup "
                "change explains"
            )
        elif status == "mismatch" and not self.options.attribution:
            att_status = "disabled"
            att_note = "not attributed: attribution is off in this verifier ([attribution] enabled)"
        elif status == "mismatch":
            # Served tokens that are not the declared replay's greedy choice are expected when
            # the numerics differ (another dtype picks other near-ties): attribute all the same.
            o = self.options
            found = attribute(
                self.engines, rec, o.fields, o.batch_sizes, o.max_candidates, comp, deadline
            )
            attribution, att_status, att_note = found.candidates, found.status, found.note
            if any(c.error == BUDGET_SPENT for c in attribution):
                notes = [
                    *evidence.notes,
                    f"attribution stopped at max_replay_s={caps.max_replay_s:g} s",
                ]
                evidence = msgspec.structs.replace(evidence, notes=notes[:64])
        if att_status:
            evidence = msgspec.structs.replace(
                evidence, attribution_status=att_status, attribution_note=att_note[:4096]
            )
        out.jitter_rel = band.jitter_rel if band else None
        out.verdict = self._verdict(
            commit,
            status,
            evidence=evidence,
            attribution=attribution,
            replay_s=replay_s,
            reference=reference,
            cross_gpu=cross,
            reason=reason,
        )
        return out
