"""RED-TEAM BEHAVIOURS: a dishonest node, for drills and the demo. Off unless configured.

Everything an agent can do to lie lives here and only here, so an audit of an honest build
reads one module. Turned on by a `[redteam]` table with `enabled = true`; the agent then logs
a WARNING at start naming every behaviour that is on.

    [redteam]
    enabled = true
    actual_batch = 4        # run each request beside 3 filler rows, declare batch 1 slot 0
    actual_attn = "eager"   # load the model with another attention implementation
    actual_dtype = "float32"  # load the model in another dtype (probes cast to the declared one)
    tamper_openings = true  # flip one byte of a probe in every opened record
    drop_every = 0          # N > 0: never publish every Nth commitment
    reorder = false         # publish commitments in swapped pairs
    hidden_work_s = 0.0     # after each batch, this long of covert forward passes (its rows
                            # again) in the engine thread, outside the committed times

The *declared* setup is always `[engine]`: the record carries it, whatever actually ran.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any

import msgspec

from fpmon.agents.config import EngineConfig, RedTeamConfig
from fpmon.engines.base import BatchRequest
from fpmon.records import Record
from fpmon.tensors import FLOAT_DTYPES, Blob
from fpmon.wire import Commit

log = logging.getLogger("fpmon.agent.redteam")


@dataclasses.dataclass
class RedTeam:
    enabled: bool = False
    actual_batch: int = 0
    actual_attn: str = ""
    actual_dtype: str = ""
    tamper_openings: bool = False
    drop_every: int = 0
    reorder: bool = False
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
            out.append(f"runs batch {self.actual_batch}, declares batch 1")
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
        if self.hidden_work_s:
            out.append(f"hides {self.hidden_work_s:g} s of work after each batch")
        return out

    def announce(self, node: str) -> None:
        if self.enabled:
            log.warning(
                "RED-TEAM MODE: this agent lies on purpose (drill/demo only)",
                extra={"fields": {"node": node, "behaviours": self.behaviours()}},
            )

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
        """Make a record claim the declared setup (and batch 1) whatever actually ran."""
        if not self.enabled:
            return record
        setup = record.setup.replace(attn_impl=declared.attn, dtype=declared.dtype)
        schedule = record.schedule
        if self.hides_batch:
            setup = setup.replace(batch_size=1, slot=0)
            schedule = {**schedule, "row_lengths": [len(record.prompt_ids)], "padding": "none"}
        probes = record.probes
        if self.actual_dtype and self.actual_dtype != declared.dtype:
            probes = {k: _cast(b, declared.dtype) for k, b in probes.items()}
        return dataclasses.replace(record, setup=setup, schedule=schedule, probes=probes)

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


def _cast(b: Blob, dtype: str) -> Blob:
    """Re-express a float probe in the declared dtype, as a cheat hiding its dtype would."""
    if b.dtype not in FLOAT_DTYPES or b.dtype == dtype:
        return b
    import torch

    t = torch.from_numpy(b.as_float64().copy()).to(getattr(torch, dtype))
    return Blob.from_torch(t)
