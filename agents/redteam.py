"""RED-TEAM BEHAVIOURS: a dishonest node, for drills and the demo. Off unless configured.

Everything an agent can do to lie lives here and only here, so an audit of an honest build
reads one module. Turned on by a `[redteam]` table with `enabled = true`; the agent then logs
a WARNING at start naming every behaviour that is on.

    [redteam]
    enabled = true
    actual_batch = 4        # run each request beside 3 filler rows, declare batch 1 slot 0
    hide_rows = ""          # the fillers in the row manifest: "" listed as fillers (no client
                            # request), "strip" left out of it too (consistent with batch 1),
                            # "forge" listed as invented requests, batch 4 declared truthfully
    actual_attn = "eager"   # load the model with another attention implementation
    actual_dtype = "float32"  # load the model in another dtype (probes cast to the declared one)
    tamper_openings = true  # flip one byte of a probe in every opened record
    drop_every = 0          # N > 0: never publish every Nth commitment
    reorder = false         # publish commitments in swapped pairs
    side_work_duty = 0.5    # > 0: hidden work inside the engine process, this share of the time
    side_work_kind = "compute"  # ... matmuls ("compute") or large copies ("memory")
    hidden_work_s = 0.0     # after each batch, this long of covert forward passes (its rows
                            # again) in the engine thread, outside the committed times

Side work is real: a thread of the agent (the engine's process) runs the lab's side-work loop
(`fpmon/sidework.py`) on the engine's device, on its own CUDA stream on a GPU, plain on the
CPU. It leaves every record honest; only the node's activity (GPU metrics, or the engine
process's CPU time) shows it.

The *declared* setup is always `[engine]`: the record carries it, whatever actually ran.

The agent imports this module only when the table is enabled (agents/parts.py): `compose`
returns wrappers of the honest worker, publisher and opener, which carry no red-team code.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import time
from typing import Any

import msgspec

from fpmon.agents.config import EngineConfig, RedTeamConfig
from fpmon.agents.openings import Opened, open_record
from fpmon.agents.parts import Parts
from fpmon.agents.publisher import Publisher
from fpmon.agents.store import RecordLog
from fpmon.agents.worker import Worker
from fpmon.engines.base import BatchRequest
from fpmon.engines.batching import filler_ids
from fpmon.records import Record
from fpmon.tensors import FLOAT_DTYPES, Blob
from fpmon.wire import Commit, OpenRequest
from fpmon.wire.messages import ManifestRow

log = logging.getLogger("fpmon.agent.redteam")


@dataclasses.dataclass
class RedTeam:
    enabled: bool = False
    actual_batch: int = 0
    hide_rows: str = ""
    actual_attn: str = ""
    actual_dtype: str = ""
    tamper_openings: bool = False
    drop_every: int = 0
    reorder: bool = False
    side_work_duty: float = 0.0
    side_work_kind: str = "compute"
    hidden_work_s: float = 0.0
    _count: int = 0
    _held: Commit | None = None

    @classmethod
    def from_config(cls, cfg: RedTeamConfig) -> RedTeam:
        """The `[redteam]` table (checked by the config layer) as behaviours."""
        if not cfg.enabled:
            return cls()  # present but disabled: an honest node
        return cls(**msgspec.structs.asdict(cfg))

    def behaviours(self) -> list[str]:
        if not self.enabled:
            return []
        out = []
        if self.actual_batch > 1:
            out.append(f"runs batch {self.actual_batch}, {HIDE_ROWS[self.hide_rows]}")
        if self.actual_attn:
            out.append(f"runs attn {self.actual_attn}")
        if self.actual_dtype:
            out.append(f"runs dtype {self.actual_dtype}")
        if self.tamper_openings:
            out.append("tampers with opened records")
        if self.drop_every:
            out.append(f"drops every {self.drop_every}th commitment")
        if self.reorder:
            out.append("reorders commitments")
        if self.side_work_duty > 0:
            out.append(
                f"runs hidden {self.side_work_kind} work in its engine process at "
                f"{self.side_work_duty:.0%} duty"
            )
        if self.hidden_work_s:
            out.append(f"hides {self.hidden_work_s:g} s of work after each batch")
        return out

    def announce(self, node: str) -> None:
        if self.enabled:
            log.warning(
                "RED-TEAM MODE: this agent lies on purpose (drill/demo only)",
                extra={"fields": {"node": node, "behaviours": self.behaviours()}},
            )

    # -- hidden work beside the declared work ------------------------------------------------

    def side_work(self, device: str) -> Any:
        """The running side-work loop on the engine's `device` (stop it with `.stop()`), or
        None for a node without it."""
        if not (self.enabled and self.side_work_duty > 0):
            return None
        from fpmon.sidework import SideWork

        work = SideWork(self.side_work_kind, self.side_work_duty, device)
        work.start()
        log.warning(
            "RED-TEAM: hidden side work running in the engine process",
            extra={
                "fields": {
                    "kind": work.kind,
                    "duty": work.duty,
                    "device": str(work.device),
                    "op_ms": round(work.op_s * 1e3, 3),
                }
            },
        )
        return work

    # -- declare one setup, run another ------------------------------------------------------

    def actual_engine(self, declared: EngineConfig) -> EngineConfig:
        if not self.enabled:
            return declared
        return msgspec.structs.replace(
            declared,
            attn=self.actual_attn or declared.attn,
            dtype=self.actual_dtype or declared.dtype,
        )

    @property
    def hides_batch(self) -> bool:
        return self.enabled and self.actual_batch > 1

    def declare(self, record: Record, declared: EngineConfig) -> Record:
        """Make a record claim the declared setup (and batch 1) whatever actually ran.

        The agent's manifest lists every row its engine ran, the fillers as rows no client
        asked for; `hide_rows` says what this cheat does about that (module docstring)."""
        if not self.enabled:
            return record
        setup = record.setup.replace(attn_impl=declared.attn, dtype=declared.dtype)
        schedule = record.schedule
        rows = record.manifest
        if self.hides_batch and self.hide_rows == "forge":
            # Declares the batch it ran (the numerics then match); invents the fillers' clients.
            if rows is not None:
                rows = tuple(
                    r if r.request_id else _forged(record.seq, i) for i, r in enumerate(rows)
                )
        elif self.hides_batch:
            setup = setup.replace(batch_size=1, slot=0)
            schedule = {**schedule, "row_lengths": [len(record.prompt_ids)], "padding": "none"}
            if self.hide_rows == "strip" and rows is not None:
                rows = rows[record.setup.slot : record.setup.slot + 1]
        probes = record.probes
        if self.actual_dtype and self.actual_dtype != declared.dtype:
            probes = {k: _cast(b, declared.dtype) for k, b in probes.items()}
        return dataclasses.replace(
            record, setup=setup, schedule=schedule, probes=probes, manifest=rows
        )

    # -- work nobody declared ----------------------------------------------------------------

    def hidden_work(self, engine: Any, rows: list[list[int]], steps: int) -> int:
        """Covert work: the batch's rows run again, unprobed, until `hidden_work_s` has passed
        (at least once). Real forward passes in the engine thread, so they compete for the
        engine's device as hidden work does; the batch's committed prefill/decode times leave
        them out, and every request of the node waits for them. Returns the passes run."""
        if not (self.enabled and self.hidden_work_s > 0):
            return 0
        until, passes = time.monotonic() + self.hidden_work_s, 0
        while passes == 0 or time.monotonic() < until:
            engine.run_batch(
                BatchRequest(rows=rows, decode_steps=steps, probe_rows=[], probes=None)
            )
            passes += 1
        return passes

    # -- openings ----------------------------------------------------------------------------

    def tamper(self, data: bytes) -> bytes:
        """Flip one bit of a probe: still a valid record, but not the one committed."""
        if not (self.enabled and self.tamper_openings):
            return data
        rec = Record.decode(data)
        name = sorted(rec.probes)[0]
        b = rec.probes[name]
        flipped = bytes([b.data[0] ^ 0x01]) + b.data[1:]
        probes = {**rec.probes, name: Blob(b.dtype, b.shape, flipped)}
        return dataclasses.replace(rec, probes=probes).encode()

    # -- commitments -------------------------------------------------------------------------

    def commits(self, c: Commit) -> list[Commit]:
        """What to publish in place of `c`: nothing (dropped), it, or a held pair swapped."""
        if not self.enabled:
            return [c]
        self._count += 1
        if self.drop_every and self._count % self.drop_every == 0:
            return []
        if self.reorder:
            if self._held is None:
                self._held = c
                return []
            held, self._held = self._held, None
            return [c, held]
        return [c]


# -- the wrappers the agent composes (agents/parts.py) ------------------------------------------


class LyingWorker(Worker):
    """Runs hidden filler rows and commits records that claim the declared setup."""

    def __init__(self, team: RedTeam, *args: Any, **kw: Any) -> None:
        self.team = team
        super().__init__(*args, **kw)

    def batch_limit(self) -> int:
        return 1 if self.team.hides_batch else super().batch_limit()

    def rows_for(self, prompts: list[list[int]]) -> list[list[int]]:
        rows = super().rows_for(prompts)
        if self.team.hides_batch:
            n = len(rows[0])
            rows += [
                filler_ids(n, r, self.engine.vocab_limit)
                for r in range(len(rows), self.team.actual_batch)
            ]
        return rows

    def declared(self, rec: Record) -> Record:
        return self.team.declare(rec, self.cfg.engine)

    def after_batch(self, rows: list[list[int]], steps: int) -> None:
        self.team.hidden_work(self.engine, rows, steps)


class LyingPublisher(Publisher):
    """Drops or reorders commitments; heads still sign the true chain (the give-away)."""

    def __init__(self, team: RedTeam, *args: Any, **kw: Any) -> None:
        self.team = team
        super().__init__(*args, **kw)

    def send_commit(self, c: Commit, republished: bool = False) -> None:
        for out in self.team.commits(c):  # a drill agent stays one across restarts
            super().send_commit(out, republished)


def _tampering_opener(team: RedTeam, store: RecordLog, req: OpenRequest, node: str) -> Opened:
    # After the honest opener's digest check, as a node that lies to the verifier would.
    opened = open_record(store, req, node)
    if opened.reply.record is None:
        return opened
    reply = msgspec.structs.replace(opened.reply, record=team.tamper(opened.reply.record))
    return dataclasses.replace(opened, reply=reply)


def compose(cfg: RedTeamConfig, node: str) -> Parts:
    team = RedTeam.from_config(cfg)
    team.announce(node)
    return Parts(
        engine=team.actual_engine,
        worker=functools.partial(LyingWorker, team),
        publisher=functools.partial(LyingPublisher, team),
        opener=functools.partial(_tampering_opener, team),
        behaviours=tuple(team.behaviours()),
        side_work=team.side_work,
    )


HIDE_ROWS = {
    "": "declares batch 1 (its manifest lists the fillers)",
    "strip": "declares batch 1 and strips the fillers from its manifest",
    "forge": "declares it, listing invented requests for the fillers",
}


def _forged(seq: int, row: int) -> ManifestRow:
    """A request nobody sent: an id and a digest that look like any other."""
    rid = hashlib.sha256(f"forged {seq} {row}".encode()).hexdigest()
    return ManifestRow(request_id=rid[:32], digest=hashlib.sha256(rid.encode()).digest())


def _cast(b: Blob, dtype: str) -> Blob:
    """Re-express a float probe in the declared dtype, as a cheat hiding its dtype would."""
    if b.dtype not in FLOAT_DTYPES or b.dtype == dtype:
        return b
    import torch

    t = torch.from_numpy(b.as_float64().copy()).to(getattr(torch, dtype))
    return Blob.from_torch(t)
