"""A fleet of real fpmon processes on loopback that a drill can SIGKILL and restart.

Fixed loopback ports are picked once, so a restarted hub, agent or daemon comes back on the
same endpoints and everyone else reconnects to it (as a restarted systemd unit would). Every
child runs in its own process group with one torch/OpenMP thread (the machine may have two
cores) and appends stderr to `<workdir>/logs/<name>.log`.

    fleet = ProcFleet(workdir, agents=3)
    fleet.start()               # hub, agents, then the daemon (it pins the agents' head keys)
    fleet.kill("hub"); fleet.restart("hub")
    fleet.stop()
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from fpmon import tomlw
from fpmon.errors import FpmonError
from fpmon.testing.spawn import AgentProcess, write_config
from fpmon.wire import StateReply, StateRequest, WireError, decode, encode

# Several processes share few cores: one thread each, or they fight for them (docs/AGENT.md).
CHILD_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TRANSFORMERS_VERBOSITY": "error",
}
# Children run the code this process imported (a worktree, not whatever is installed).
ROOT = Path(__file__).resolve().parents[3]  # the repository root, above fpmon/
ONE_THREAD = {"model": "tiny", "dtype": "bfloat16", "device": "cpu", "threads": 1}


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    env = {**CHILD_ENV, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
    return {**env, **(extra or {})}


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def free_ports(n: int, rng: random.Random | None = None) -> list[int]:
    """`n` distinct loopback ports nobody holds now, outside the kernel's ephemeral range: a
    restarted process binds the same port again, and an ephemeral one may meanwhile have
    become some client connection's source port (EADDRINUSE on restart)."""
    rng = rng or random.Random()
    lo, hi = _ephemeral_range()
    candidates = [p for p in range(10_000, 65_000) if not lo <= p <= hi]
    out: list[int] = []
    while len(out) < n:
        port = rng.choice(candidates)
        if port in out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        out.append(port)
    return out


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` (psutil when installed, else /proc/<pid>/status VmRSS)."""
    try:
        import psutil

        return int(psutil.Process(pid).memory_info().rss)
    except ImportError:
        pass
    except Exception:
        return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def metrics(port: int, timeout_s: float = 5.0) -> dict[str, float]:
    """The daemon's Prometheus text as {'name{labels}': value} (empty when unreachable)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            out[key] = float(val)
    return out


def labelled(m: dict[str, float], name: str, label: str) -> dict[str, float]:
    """{label value: figure} of one labelled metric, e.g. rejects by reason."""
    out = {}
    prefix = name + "{"
    for k, v in m.items():
        if k.startswith(prefix) and f'{label}="' in k:
            out[k.split(f'{label}="', 1)[1].split('"', 1)[0]] = v
    return out


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the drill dies, even by a crash (Linux).

    PR_SET_PDEATHSIG follows the *thread* that forked: spawn from the main thread only."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(argv: list[str], log: Path, cwd: Path | None) -> subprocess.Popen[bytes]:
    env = {**os.environ, **child_env()}
    for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC"):
        env.pop(k, None)
    with open(log, "ab") as f:
        return subprocess.Popen(
            [sys.executable, "-m", "fpmon", *argv],
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )


class Child:
    """One restartable `python -m fpmon ...` process in its own process group."""

    def __init__(self, name: str, argv: list[str], log: Path, cwd: Path) -> None:
        self.name, self.argv, self.log, self.cwd = name, argv, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.proc = _spawn(self.argv, self.log, self.cwd)
        self.starts += 1

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    def exited(self) -> int | None:
        """Exit code when the process ended, None while it runs (or before it started)."""
        return None if self.proc is None else self.proc.poll()

    def kill(self) -> None:
        if self.proc is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout_s: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def tail(self, n: int = 5) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""


class Agent(Child):
    """An agent (`fpmon agent`): started like `agents.spawn.AgentProcess`, serving once its
    status file names the new pid (after the model loaded and the sockets are bound)."""

    def __init__(self, name: str, config: Path, log: Path) -> None:
        super().__init__(name, ["agent", "--config", str(config)], log, config.parent)
        self.state_dir = AgentProcess(config, log_path=log).state_dir
        self.last_status: dict[str, Any] = {}

    @property
    def db(self) -> Path:
        return self.state_dir / "records.sqlite"

    def start(self) -> None:
        (self.state_dir / "status.json").unlink(missing_ok=True)
        super().start()

    def wait_serving(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rc = self.exited()
            if rc is not None:
                raise FpmonError(f"agent {self.name} exited with {rc} during start: {self.tail()}")
            if self.status().get("pid") == self.pid:
                return
            time.sleep(0.1)
        raise FpmonError(f"agent {self.name} not serving within {timeout_s:g} s: {self.tail()}")

    def status(self) -> dict[str, Any]:
        with contextlib.suppress(OSError, ValueError):
            self.last_status = json.loads((self.state_dir / "status.json").read_text())
        return self.last_status


class StateClient:
    """StateRequest -> StateReply to the daemon's ROUTER, Lazy Pirate style: a request that
    gets no answer in time closes the socket, so nothing queues up for a dead daemon."""

    def __init__(self, endpoint: str, ctx: zmq.Context[Any] | None = None) -> None:
        self.endpoint = endpoint
        self.ctx = ctx or zmq.Context.instance()
        self.sock: zmq.Socket[Any] | None = None

    def _socket(self) -> zmq.Socket[Any]:
        if self.sock is None:
            s = self.ctx.socket(zmq.DEALER)
            s.linger = 0
            s.immediate = True
            s.sndtimeo = 0
            s.connect(self.endpoint)
            self.sock = s
        return self.sock

    def request(self, timeout_s: float = 2.0, since: int = 0) -> StateReply | None:
        s = self._socket()
        # ZMQ_IMMEDIATE: writable only once connected, so nothing waits for a dead daemon.
        if not s.poll(int(timeout_s * 1000), zmq.POLLOUT):
            return None
        try:
            req = StateRequest(node="drill", t=time.time(), since_verdicts=since)
            s.send_multipart(encode(req))
        except zmq.Again:
            return None
        if not s.poll(int(timeout_s * 1000)):
            self.reset()  # the request may sit in a dead peer's pipe: start afresh
            return None
        try:
            reply = decode(s.recv_multipart(), expect=("state",))
        except WireError:
            return None
        assert isinstance(reply, StateReply)
        return reply

    def reset(self) -> None:
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def close(self) -> None:
        self.reset()


class ProcFleet:
    """Hub, `agents` honest agents (tiny model, one thread) and the replay daemon."""

    def __init__(
        self,
        workdir: Path,
        agents: int = 3,
        *,
        sampling_rate: float = 0.3,
        agent_sections: dict[str, dict[str, Any]] | None = None,
        replay_sections: dict[str, dict[str, Any]] | None = None,
        metrics: bool = True,
    ) -> None:
        self.dir = Path(workdir)
        (self.dir / "logs").mkdir(parents=True, exist_ok=True)
        ports = free_ports(4 + 2 * agents)
        self.hub_xsub, self.hub_xpub, self.state = map(tcp, ports[:3])
        self.metrics_port = ports[3] if metrics else 0
        self.names = [f"drill-{i}" for i in range(agents)]
        self.intake = {n: tcp(ports[4 + 2 * i]) for i, n in enumerate(self.names)}
        self.openings = {n: tcp(ports[5 + 2 * i]) for i, n in enumerate(self.names)}
        self.sampling_rate = sampling_rate
        self.agent_sections = agent_sections or {}
        self.replay_sections = replay_sections or {}
        self.store = self.dir / "replay" / "replay.sqlite"
        self.hub = Child(
            "hub", ["hub", "--config", str(self._hub_config())], self._log("hub"), self.dir
        )
        self.agents = {n: Agent(n, self._agent_config(n), self._log(n)) for n in self.names}
        self.replay = Child(
            "replay",
            ["replay", "--config", str(self.dir / "replay" / "replay.toml")],
            self._log("replay"),
            self.dir,
        )

    # --- configs ------------------------------------------------------------------------
    def _log(self, name: str) -> Path:
        return self.dir / "logs" / f"{name}.log"

    def _hub_config(self) -> Path:
        p = self.dir / "hub.toml"
        p.write_text(tomlw.dumps({"hub": {"xsub": self.hub_xsub, "xpub": self.hub_xpub}}))
        return p

    def _agent_config(self, name: str) -> Path:
        sections: dict[str, Any] = {
            "engine": dict(ONE_THREAD),
            "batching": {"max_batch": 2, "max_wait_ms": 5},
            "security": {"curve": False},
        }
        for k, v in self.agent_sections.items():
            sections[k] = {**sections.get(k, {}), **v}
        sections["endpoints"] = {
            "intake": self.intake[name],
            "openings": self.openings[name],
            "publish": "tcp://127.0.0.1:*",  # unused: the PUB connects to the hub
            "hub": self.hub_xsub,
        }
        return write_config(self.dir / "agents" / name, name, **sections)

    def _replay_config(self) -> Path:
        d = self.dir / "replay"
        d.mkdir(parents=True, exist_ok=True)
        key = d / "sampling.key"
        if not key.exists():  # fixed across restarts: a restarted daemon samples the same seqs
            key.write_text(os.urandom(32).hex())
            key.chmod(0o600)
        doc: dict[str, Any] = {
            "replay": {
                "name": "replay",
                "store": str(self.store),
                "hub": self.hub_xpub,
                "hub_xsub": self.hub_xsub,
                "state": self.state,
                "metrics_port": self.metrics_port,
                "device": "cpu",
                "threads": 1,
            },
            "models": {"tiny": "tiny"},
            "sampling": {
                "key_file": str(key),
                "rate": self.sampling_rate,
                "suspect_rate": self.sampling_rate,
            },
            "openings": {"deadline_s": 5.0, "retries": 2},
            "attribution": {"fields": ["batch_size", "attn_impl", "dtype"], "max_candidates": 4},
            # Co-located processes on two cores: timing is scheduler noise, not evidence.
            "timing": {"margin": 50.0, "capacity_margin": 50.0},
        }
        for k, v in self.replay_sections.items():
            doc[k] = {**doc.get(k, {}), **v}
        doc["node"] = [
            {
                "name": n,
                "openings": self.openings[n],
                "sign_pubkey": str(a.status()["pubkey"]),
            }
            for n, a in self.agents.items()
        ]
        p = d / "replay.toml"
        p.write_text(tomlw.dumps(doc))
        p.chmod(0o600)
        return p

    # --- lifecycle ----------------------------------------------------------------------
    def components(self) -> list[str]:
        return ["hub", *self.names, "replay"]

    def child(self, name: str) -> Child | Agent:
        if name == "hub":
            return self.hub
        if name == "replay":
            return self.replay
        return self.agents[name]

    def pids(self) -> dict[str, int]:
        return {n: self.child(n).pid for n in self.components()}

    def start(self, timeout_s: float = 120.0) -> None:
        self.hub.start()
        self.wait_hub(timeout_s)
        for a in self.agents.values():  # all at once: they load their models side by side
            a.start()
        for a in self.agents.values():
            a.wait_serving(timeout_s)
        self._replay_config()
        self.replay.start()
        self.wait_state(timeout_s)

    def wait_hub(self, timeout_s: float = 30.0) -> None:
        port = int(self.hub_xpub.rsplit(":", 1)[1])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.hub.exited() is not None:
                raise FpmonError(f"hub exited ({self.hub.exited()}): {self.hub.tail()}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise FpmonError(f"hub not listening within {timeout_s:g} s: {self.hub.tail()}")

    def wait_state(self, timeout_s: float = 60.0) -> StateReply:
        client = StateClient(self.state)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.replay.exited() is not None:
                    raise FpmonError(
                        f"replay daemon exited ({self.replay.exited()}): {self.replay.tail()}"
                    )
                reply = client.request(1.0)
                if reply is not None:
                    return reply
        finally:
            client.close()
        raise FpmonError(f"replay daemon not answering within {timeout_s:g} s")

    def kill(self, name: str) -> None:
        self.child(name).kill()

    def restart(self, name: str, timeout_s: float = 120.0) -> None:
        """Start `name` again. Agents return once serving; hub and daemon once spawned."""
        c = self.child(name)
        c.start()
        if isinstance(c, Agent):
            c.wait_serving(timeout_s)

    def crashed(self) -> dict[str, int]:
        """Components that exited on their own (not killed by the drill): name -> exit code."""
        out = {}
        for n in self.components():
            rc = self.child(n).exited()
            if rc is not None:
                out[n] = rc
        return out

    def stop(self) -> dict[str, int | None]:
        """SIGTERM everyone (daemon first, hub last); exit codes."""
        rcs: dict[str, int | None] = {}
        rcs["replay"] = self.replay.stop()
        for n, a in self.agents.items():
            rcs[n] = a.stop()
        rcs["hub"] = self.hub.stop()
        return rcs

    def force_stop(self) -> None:
        for n in self.components():
            with contextlib.suppress(Exception):
                self.child(n).kill()


def wait_for(pred: Callable[[], Any], timeout_s: float, poll_s: float = 0.05) -> Any:
    """Poll `pred` until truthy (its value) or the timeout (None)."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)
