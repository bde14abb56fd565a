"""Start real agent processes from Python: for tests, benchmarks and the demo.

`write_config(dir, node, ...)` writes a TOML config (ephemeral loopback ports by default);
`AgentProcess(config).start()` runs `python -m fpmon agent --config FILE` and waits until the
agent serves, reading its bound endpoints from the status file it keeps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from fpmon import tomlw
from fpmon.errors import FpmonError

EPHEMERAL = "tcp://127.0.0.1:*"


def write_config(folder: Path, node: str, **sections: dict[str, Any]) -> Path:
    """A config for `node` in `folder`, state in `folder/state`, all endpoints ephemeral."""
    folder.mkdir(parents=True, exist_ok=True)
    cfg: dict[str, Any] = {"node": node, "state_dir": str(folder / "state")}
    endpoints = {"intake": EPHEMERAL, "publish": EPHEMERAL, "openings": EPHEMERAL}
    endpoints.update(sections.pop("endpoints", {}))
    cfg["endpoints"] = endpoints
    cfg.update(sections)
    path = folder / f"{node}.toml"
    tomlw.write(path, cfg)
    return path


class AgentProcess:
    def __init__(self, config: Path, log_path: Path | None = None) -> None:
        from fpmon.agents.config import load_config

        self.config = Path(config)
        self.state_dir = load_config(self.config).state_dir
        self.log_path = log_path or self.config.with_suffix(".log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.status: dict[str, Any] = {}

    def start(self, timeout_s: float = 120.0, env: dict[str, str] | None = None) -> AgentProcess:
        """Start and wait until serving; `env` adds variables (e.g. NOTIFY_SOCKET for tests)."""
        status = self.state_dir / "status.json"
        status.unlink(missing_ok=True)
        base = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
        env = {
            **base,
            "TRANSFORMERS_VERBOSITY": "error",
            "TOKENIZERS_PARALLELISM": "false",
            **(env or {}),
        }
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "fpmon", "agent", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=log,
                env=env,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise FpmonError(
                    f"agent exited with {self.proc.returncode} during start: {self.log_tail()}"
                )
            try:
                s = json.loads(status.read_text())
            except (OSError, ValueError):
                time.sleep(0.1)
                continue
            if s.get("pid") == self.proc.pid:
                self.status = s
                return self
            time.sleep(0.1)
        self.kill()
        raise FpmonError(f"agent did not start within {timeout_s:g} s: {self.log_tail()}")

    def read_status(self) -> dict[str, Any]:
        self.status = json.loads((self.state_dir / "status.json").read_text())
        return self.status

    @property
    def endpoints(self) -> dict[str, str]:
        return dict(self.status["endpoints"])

    def node_entry(self, *, intake: bool = False, **extra: str) -> dict[str, str]:
        """This running agent as a replay daemon's `[[node]]` table: its name, publish and
        openings endpoints and the key its heads are signed with; `intake` for a node the
        daemon challenges; `extra` entries as given (curve_pubkey, manifests)."""
        st = self.read_status()
        entry = {
            "name": st["node"],
            "publish": self.endpoints["publish"],
            "openings": self.endpoints["openings"],
            "sign_pubkey": st["pubkey"],
        }
        if intake:
            entry["intake"] = self.endpoints["intake"]
        return entry | extra

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text()[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return int(self.proc.returncode)

    def __enter__(self) -> AgentProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()
