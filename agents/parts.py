"""What an agent is built from: engine settings, worker, publisher, record opener.

An honest agent uses the classes as they are. `[redteam] enabled = true` swaps in the lying
wrappers of agents/redteam.py, which is imported only then: the honest path has no red-team
parameter to thread through and no red-team code loaded, so an audit of what an honest node
runs never has to read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fpmon.agents.config import EngineConfig, RedTeamConfig
from fpmon.agents.openings import Opened, open_record
from fpmon.agents.publisher import Publisher
from fpmon.agents.store import RecordLog
from fpmon.agents.worker import Worker
from fpmon.wire import OpenRequest


def _as_declared(e: EngineConfig) -> EngineConfig:
    return e


def _no_side_work(device: str) -> None:
    return None


@dataclass(frozen=True)
class Parts:
    engine: Callable[[EngineConfig], EngineConfig] = _as_declared  # what actually runs
    worker: Callable[..., Worker] = Worker
    publisher: Callable[..., Publisher] = Publisher
    opener: Callable[[RecordLog, OpenRequest, str], Opened] = open_record
    behaviours: tuple[str, ...] = ()
    # Hidden work started beside the engine on its device; something to `.stop()`, or None.
    side_work: Callable[[str], Any] = _no_side_work


HONEST = Parts()


def parts_for(cfg: RedTeamConfig, node: str) -> Parts:
    if not cfg.enabled:
        return HONEST
    from fpmon.agents import redteam

    return redteam.compose(cfg, node)
