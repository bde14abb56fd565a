"""Real agents, ordinary client load and a replay daemon that challenges them: for the
functional tests of verifier-timed challenges and `bench/challenge_spread.py`.

The daemon is an intake client of every agent here; with Curve the operator step is the same
as in production: the daemon's client certificate's public `.key` goes into each agent's
`[security] clients_dir` (`allow_client`). Challenges draw from the same prompt pool, client
name and token budget as the load (`ClientLoad`), so the node cannot tell them apart by content.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

from fpmon.monitor.loadgen import PROMPTS
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.testing.spawn import write_config

CLIENT = "loadgen"  # what the ordinary clients here call themselves


def agent_config(folder: Path, node: str, **sections: dict[str, Any]) -> Path:
    """A CPU agent on the tiny model, one torch thread (agents share 2 cores here)."""
    doc: dict[str, Any] = {
        "engine": {
            "model": "tiny",
            "dtype": "bfloat16",
            "attn": "sdpa",
            "device": "cpu",
            "threads": 1,
        },
        "batching": {"max_batch": 4, "max_wait_ms": 5},
        "security": {"curve": False},
        "publish": {"head_every_s": 0.5},
    }
    for k, v in sections.items():
        doc[k] = {**doc.get(k, {}), **v}
    return write_config(folder, node, **doc)


def allow_client(clients_dir: Path, public_key_file: Path) -> None:
    """The operator step: let a client key (the daemon's) submit to an agent."""
    clients_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(public_key_file, clients_dir / public_key_file.name)


def daemon_doc(
    tmp: Path,
    nodes: list[dict[str, str]],
    mean_interval_s: float,
    max_new_tokens: int = 16,
    **sections: dict[str, Any],
) -> dict[str, Any]:
    key = tmp / "sampling.key"
    if not key.exists():
        key.write_text("33" * 32)
        key.chmod(0o600)
    doc: dict[str, Any] = {
        "replay": {
            "store": str(tmp / "replay.sqlite"),
            "publish": "tcp://127.0.0.1:0",
            "state": "tcp://127.0.0.1:0",
            "threads": 1,
        },
        "sampling": {"key_file": str(key), "rate": 0.0, "suspect_rate": 0.0},
        "openings": {"deadline_s": 3.0, "retries": 2, "grace_s": 5.0},
        "attribution": {"enabled": False},
        # The committed-time check (replay/timing.py) judges committed against reference time
        # on one shared host where the verifier's replays and the agents' batches fight for 2
        # cores: scheduler noise, not evidence (the demo sets the same). The challenges judge
        # the verifier's own stopwatch and are measured here.
        "timing": {"margin": 4.0},
        "challenges": {
            "enabled": True,
            "mean_interval_s": mean_interval_s,
            "max_new_tokens": max_new_tokens,
            "timeout_s": 30.0,
            "client": CLIENT,
            "prompts": list(PROMPTS),
        },
        "node": nodes,
    }
    for name, values in sections.items():
        doc[name] = {**doc.get(name, {}), **values}
    return doc


class RunningDaemon:
    """A `ReplayDaemon` on its own thread, stopped on exit."""

    def __init__(self, tmp: Path, doc: dict[str, Any], engine_factory: Any = None) -> None:
        self.cfg = config.parse(tmp / "replay.toml", doc)
        kw = {"engine_factory": engine_factory} if engine_factory is not None else {}
        self.daemon = ReplayDaemon(self.cfg, **kw)
        self.thread = threading.Thread(target=self.daemon.run, daemon=True)

    def __enter__(self) -> ReplayDaemon:
        self.daemon.start()
        self.thread.start()
        return self.daemon

    def __exit__(self, *exc: object) -> None:
        self.daemon.stop()
        self.thread.join(timeout=60)


def wait_heard(daemon: ReplayDaemon, names: list[str], timeout_s: float = 20.0) -> None:
    """Until the daemon has telemetry from every node (agents publish it at 1 Hz)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(daemon.intake.stats[n].last_telemetry_t > 0 for n in names):
            return
        time.sleep(0.1)
    raise TimeoutError(f"the daemon never heard from all of {names}")
