"""`fpmon demo`: a real local fleet on loopback, the verifier, and the dashboard, one command.

Processes (each its own process group, logs under the work folder):
  hub        `fpmon hub`     XSUB for publishers, XPUB for subscribers
  6 agents   `fpmon agent`   tiny model; one honest, five red-team (agents/redteam.py)
  replay     `fpmon replay`  SUBs the hub, opens and replays samples, PUBs verdicts to the hub
  loadgen    `python -m fpmon.monitor.loadgen`  steady requests to every agent's intake
and the dashboard (this process), SUB on the hub's XPUB plus a StateRequest to the daemon.

Honest physics (docs/CAPTURE.md, docs/ENVIRONMENT.md): on this CPU bf16/fp16 activations do
not move with batch size, float32 decode does; attention and dtype changes show after layer 0.
So the batch cheat declares float32, the attention cheat bf16 sdpa (runs eager), the dtype
cheat declares float32 (runs bf16), and the tamperer computes honestly but alters opened
records. The hidden-work node serves every request honestly and declares float32 like the
honest node, while a thread of its engine process runs matmuls half the time: no record
shows it, its engine's CPU time does (replay/accounting.py, metric `cpu`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fpmon import tomlw
from fpmon.config import PublicKeyHex
from fpmon.errors import FpmonError
from fpmon.monitor.config import Endpoints, MonitorConfig, WatchConfig
from fpmon.progress import Progress
from fpmon.setups import Setup

if TYPE_CHECKING:
    from fpmon.monitor.model import FleetModel

# The hidden-work node's side work: matmuls in its engine process half the time (measured here:
# engine CPU 4.6-15.7x what its tokens explain, every window over; 0.25 gave 3.2-4.1, closer to
# the threshold of 2.5 than a demo that must pass on a busy machine should be).
HIDDEN_DUTY = 0.5
# Capacity accounting windows: short enough that a 45 s demo closes two or three per node.
CAPACITY_WINDOW_S = 15.0


@dataclass(frozen=True)
class DemoNode:
    name: str
    dtype: str  # declared
    attn: str  # declared
    redteam: dict[str, Any] = field(default_factory=dict)
    expect: str = "match"  # the attribution (setup field) or status an inspector should see

    def declared(self) -> Setup:
        return Setup(dtype=self.dtype, attn_impl=self.attn, batch_size=1, slot=0)

    def actual(self) -> Setup:
        s = self.declared()
        rt = self.redteam
        if rt.get("actual_batch"):
            s = s.replace(batch_size=rt["actual_batch"])
        if rt.get("actual_attn"):
            s = s.replace(attn_impl=rt["actual_attn"])
        if rt.get("actual_dtype"):
            s = s.replace(dtype=rt["actual_dtype"])
        return s


NODES = (
    DemoNode("node-honest", "float32", "sdpa"),
    # Strips its fillers from the row manifest too (else covert_rows): the numerics catch it.
    DemoNode(
        "node-batch", "float32", "sdpa", {"actual_batch": 4, "hide_rows": "strip"}, "batch_size"
    ),
    DemoNode("node-attn", "bfloat16", "sdpa", {"actual_attn": "eager"}, "attn_impl"),
    DemoNode("node-dtype", "float32", "sdpa", {"actual_dtype": "bfloat16"}, "dtype"),
    DemoNode("node-tamper", "bfloat16", "sdpa", {"tamper_openings": True}, "bad_opening"),
    DemoNode("node-hidden", "float32", "sdpa", {"side_work_duty": HIDDEN_DUTY}, "hidden_work"),
)


def free_ports(n: int, base: int = 0) -> list[int]:
    """`n` loopback ports nobody holds now (from `base` on, or picked by the kernel)."""
    out: list[int] = []
    held = []
    port = base
    while len(out) < n:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port if base else 0))
        except OSError:
            s.close()
            port += 1
            if base and port > base + 1000:
                raise FpmonError(f"no {n} free loopback ports from {base}") from None
            continue
        held.append(s)
        out.append(s.getsockname()[1])
        port += 1
    for s in held:
        s.close()
    return out


def tcp(port: int) -> str:
    return f"tcp://127.0.0.1:{port}"


def _write_key(path: Path) -> str:
    """An Ed25519 key (a node's head key, the verifier's), made here so others can pin it."""
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw.hex()


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log: Path

    def tail(self, n: int = 3) -> str:
        try:
            return " | ".join(self.log.read_text(errors="replace").strip().splitlines()[-n:])
        except OSError:
            return ""


class Fleet:
    """Writes the configs, starts every process in its own group, and stops them all."""

    def __init__(
        self,
        workdir: Path,
        base_port: int = 0,
        rate: float = 0.5,
        nodes: Sequence[DemoNode] = NODES,  # another fleet: benchmarks (bench/cpu_accounting.py)
    ) -> None:
        self.dir = workdir
        self.rate = rate
        self.nodes = tuple(nodes)
        ports = free_ports(4 + 2 * len(self.nodes), base_port)
        self.hub_xsub, self.hub_xpub, self.state, self.verdicts = map(tcp, ports[:4])
        self.intake = {n.name: tcp(ports[4 + 2 * i]) for i, n in enumerate(self.nodes)}
        self.openings = {n.name: tcp(ports[5 + 2 * i]) for i, n in enumerate(self.nodes)}
        self.children: list[Child] = []
        self.reported: set[str] = set()
        self.verifier_key: bytes | None = None  # the replay daemon's, made by write_configs

    def monitor_config(self) -> MonitorConfig:
        if self.verifier_key is None:
            raise FpmonError("the demo's verifier key is made with its configs: start it first")
        watch = WatchConfig(
            endpoints=Endpoints([self.hub_xpub]),
            state=self.state,
            verifier_key=PublicKeyHex(self.verifier_key),
        )
        return MonitorConfig(monitor=watch)

    def write_configs(self) -> dict[str, Path]:
        d = self.dir
        (d / "logs").mkdir(parents=True, exist_ok=True)
        paths = {"hub": d / "hub.toml", "replay": d / "replay.toml"}
        # The verifier signs verdicts and alerts; the dashboard accepts only those (the hub runs
        # without Curve here, so anyone on loopback could publish a verdict).
        verifier_file = d / "keys" / "verifier-signing.key"
        self.verifier_key = bytes.fromhex(_write_key(verifier_file))
        tomlw.write(paths["hub"], {"hub": {"xsub": self.hub_xsub, "xpub": self.hub_xpub}})
        nodes = []
        for n in self.nodes:
            state_dir = d / "agents" / n.name
            pub_hex = _write_key(state_dir / "signing.key")
            doc: dict[str, Any] = {
                "node": n.name,
                "state_dir": str(state_dir),
                "engine": {"model": "tiny", "dtype": n.dtype, "attn": n.attn, "device": "cpu"},
                # One request per batch, as declared (batch 1); the batch cheat pads to 4.
                "batching": {"max_batch": 1, "max_wait_ms": 5},
                "endpoints": {
                    "intake": self.intake[n.name],
                    "openings": self.openings[n.name],
                    "publish": "tcp://127.0.0.1:0",  # unused: the PUB connects to the hub
                    "hub": self.hub_xsub,
                },
                "security": {"curve": False},
            }
            if n.redteam:
                doc["redteam"] = {"enabled": True, **n.redteam}
            paths[n.name] = d / f"agent-{n.name}.toml"
            tomlw.write(paths[n.name], doc)
            nodes.append(
                {"name": n.name, "openings": self.openings[n.name], "sign_pubkey": pub_hex}
            )
        tomlw.write(
            paths["replay"],
            {
                "replay": {
                    "name": "replay",
                    "store": str(d / "replay.sqlite"),
                    "publish": self.verdicts,
                    "hub_xsub": self.hub_xsub,
                    "hub": self.hub_xpub,
                    "state": self.state,
                    "signing_key_file": str(verifier_file),
                    "metrics_port": 0,
                    "device": "cpu",
                },
                "models": {"tiny": "tiny"},
                "sampling": {"rate": self.rate, "suspect_rate": self.rate},
                "openings": {"deadline_s": 3.0, "retries": 2},
                "attribution": {"fields": ["batch_size", "attn_impl", "dtype"]},
                # Nine processes share two CPU cores here: per-request time is scheduler
                # noise, not evidence. The demo shows numerics; timing needs a quiet GPU.
                "timing": {"margin": 4.0, "capacity_window_s": CAPACITY_WINDOW_S},
                "node": nodes,
            },
        )
        tomlw.write(
            d / "monitor.toml",
            {
                "monitor": {
                    "endpoints": [self.hub_xpub],
                    "state": self.state,
                    "verifier_key": self.verifier_key.hex(),
                }
            },
        )
        return paths

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = self.dir / "logs" / f"{name}.log"
        env = {
            **os.environ,
            # 2 cores shared by ~8 processes: one thread each, or they fight for the cores.
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_VERBOSITY": "error",
        }
        with open(log, "ab") as f:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.dir,
                start_new_session=True,  # its own process group: we stop it and its children
            )
        self.children.append(Child(name, proc, log))

    def start(self) -> None:
        paths = self.write_configs()
        fp = [sys.executable, "-m", "fpmon"]
        self._spawn("hub", [*fp, "hub", "--config", str(paths["hub"])])
        self._spawn("replay", [*fp, "replay", "--config", str(paths["replay"])])
        for n in self.nodes:
            self._spawn(n.name, [*fp, "agent", "--config", str(paths[n.name])])
        self._spawn(
            "loadgen",
            [sys.executable, "-m", "fpmon.monitor.loadgen", "--rate", str(self.rate),
             *[a for n in self.nodes for a in ("--intake", self.intake[n.name])]],
        )  # fmt: skip

    def problems(self) -> list[str]:
        """Children that exited on their own, once each: name, exit code, last log lines."""
        out = []
        for c in self.children:
            rc = c.proc.poll()
            if rc is not None and c.name not in self.reported:
                self.reported.add(c.name)
                out.append(f"{c.name} exited ({rc}): {c.tail()} — log {c.log}")
        return out

    def stop(self, grace_s: float = 8.0) -> None:
        """SIGTERM every process group (load first, hub last), then SIGKILL what is left."""
        for c in reversed(self.children):
            _signal_group(c.proc, signal.SIGTERM)
        end = time.monotonic() + grace_s
        for c in self.children:
            try:
                c.proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(c.proc, signal.SIGKILL)
                c.proc.wait(5)
        # Anything still in a child's group (a grandchild) goes too.
        for c in self.children:
            _signal_group(c.proc, signal.SIGKILL)


# -- finding a running demo (`fpmon snapshot` with no endpoint) ---------------------------
def demos_dir() -> Path:
    """Where each running demo leaves its monitor config, named by its pid."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    root = Path(base) / "fpmon" if base else Path.home() / ".cache" / "fpmon" / "run"
    return root / "demos"


def announce(monitor_toml: Path) -> Path:
    """Say where this demo's fleet is, so `fpmon snapshot --json` finds it as written."""
    d = demos_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{os.getpid()}.toml"
    path.write_text(monitor_toml.read_text())
    return path


def running_demo() -> Path | None:
    """The monitor config of the newest demo still running (its process alive), if any;
    files left by a demo that was killed are removed."""
    found = []
    for f in demos_dir().glob("*.toml"):
        try:
            pid = int(f.stem)
            os.kill(pid, 0)
        except ValueError:
            continue
        except ProcessLookupError:
            f.unlink(missing_ok=True)
            continue
        except PermissionError:
            pass  # alive, someone else's
        found.append((f.stat().st_mtime, f))
    return max(found)[1] if found else None


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def summary(model: FleetModel, duration_s: float, problems: Sequence[str] = ()) -> dict[str, Any]:
    """The headless summary: per node, declared vs actual setup, verdicts and attributions,
    whether the verifier saw it as it is (`pass`, `why`); overall `pass`."""
    nodes = []
    for n in NODES:
        row = model.nodes.get(n.name)
        # Declared: what the node's commitments say (versions included) once any arrived.
        declared = dict(row.declared) if row and row.declared else n.declared().to_map()
        # Actual: known to the demo only (the red-team config), on top of the declared map.
        lie, truth = n.declared().to_map(), n.actual().to_map()
        actual = {**declared, **{k: v for k, v in truth.items() if v != lie[k]}}
        nodes.append(
            {
                "node": n.name,
                "declared": declared,
                "actual": actual,
                "verdicts": dict(row.verdicts) if row else {},
                "attributions": dict(row.attributions) if row else {},
                # How the mismatches' attributions ended: "exact", or why none is exact.
                "attribution_status": dict(row.attribution_status) if row else {},
                "alerts": alert_counts(model, n.name),
                "expect": n.expect,
                "health": row.health if row else "pending",
                "commits": row.commits if row else 0,
            }
        )
        nodes[-1]["pass"], nodes[-1]["why"] = judge(nodes[-1])
    failed = [n["node"] for n in nodes if not n["pass"]]
    return {
        "duration_s": round(duration_s, 1),
        # Overall: the honest node clean and every cheat caught for what it did (exit 0), or
        # not (exit 1; `failed` names the nodes and each one's `why` says how).
        "pass": not failed and not problems,
        "failed": failed,
        "problems": list(problems),
        "nodes": nodes,
    }


GOOD = ("match", "within_noise")
STATUS_EXPECT = ("bad_opening", "chain_break", "unopened")  # cheats a status names, not a field
# Alerts that say a node did work it did not declare; an honest node must raise none.
HIDDEN_WORK_ALERTS = ("undeclared_capacity", "suspected_hidden_work")


def alert_counts(model: FleetModel, node: str) -> dict[str, int]:
    """Alerts by kind (the model groups them per node and kind; each group counts its own)."""
    out: Counter[str] = Counter()
    for e in model.alerts.values():
        if e.alert.node == node:
            out[e.alert.kind] += e.count
    return dict(out)


def judge(n: dict[str, Any]) -> tuple[bool, str]:
    """Did the verifier see this node as it is? One line of why, either way."""
    v, att, expect = n["verdicts"], n["attributions"], n["expect"]
    good = sum(v.get(s, 0) for s in GOOD)
    hidden = {k: c for k, c in n["alerts"].items() if k in HIDDEN_WORK_ALERTS}
    if not sum(v.values()):
        return False, "no verdict yet (run longer: the first come 10-20 s after start)"
    bad = {s: k for s, k in v.items() if s not in GOOD and s != "unverifiable"}
    if expect == "match":
        if hidden:
            return False, f"honest node alerted {_counts(hidden)}"
        if bad or n["health"] != "ok":
            return False, f"honest node judged {_counts(bad) if bad else n['health']}"
        return True, f"{good} verdicts, all {'/'.join(s for s in GOOD if v.get(s))}"
    if expect == "hidden_work":
        # Its records are honest: the replays must find nothing; only its activity tells.
        if bad:
            return False, f"hidden-work node's records judged {_counts(bad)}"
        if not hidden:
            return False, (
                f"no {' or '.join(HIDDEN_WORK_ALERTS)} alert (the first capacity window "
                f"closes about {CAPACITY_WINDOW_S:g} s after its first replay)"
            )
        return True, f"{_counts(hidden)}; {good} verdicts, all match"
    if good:
        return False, f"cheat judged good {good} time(s)"
    if expect in STATUS_EXPECT:
        if not v.get(expect):
            return False, f"expected {expect}, got {_counts(v)}"
        return True, f"{v[expect]} × {expect}"
    if not v.get("mismatch"):
        return False, f"expected mismatches attributed to {expect}, got {_counts(v)}"
    if set(att) != {expect}:
        return False, f"attributed to {_counts(att)}, not {expect}"
    return True, f"{v['mismatch']} mismatches, every one attributed to {expect}"


def headless(fleet: Fleet, duration_s: float, on_problem: Callable[[str], None]) -> dict[str, Any]:
    from fpmon.monitor.feed import EndpointState, Feed, Inbox, Rejected
    from fpmon.monitor.model import FleetModel
    from fpmon.wire import Message

    cfg = fleet.monitor_config()
    model = FleetModel(cfg.limits)
    inbox = Inbox()
    feed = Feed(
        inbox, cfg.monitor.endpoints, cfg.monitor.state, verifier_key=cfg.monitor.verifier_key
    )
    feed.start()
    progress = Progress()
    t0 = time.monotonic()
    problems: list[str] = []
    try:
        while (elapsed := time.monotonic() - t0) < duration_s:
            for item in inbox.drain():
                if isinstance(item, Message):
                    model.apply(item)
                elif isinstance(item, EndpointState):
                    model.set_endpoint(item.endpoint, item.state)
                elif isinstance(item, Rejected):
                    model.rejected[item.reason] += 1
            for p in fleet.problems():
                problems.append(p)
                on_problem(p)
            checked = sum(r.checked for r in model.nodes.values())
            progress.update(int(elapsed), int(duration_s), f"demo: {checked} verdicts")
            time.sleep(0.2)
        model.tick()
    finally:
        feed.stop()
    progress.done()
    return summary(model, time.monotonic() - t0, problems)


def _counts(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(d.items())) or "—"


def print_summary(result: dict[str, Any], file: Any = None) -> None:
    """The headless summary as a table (the JSON has every field)."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = file or sys.stdout
    console = Console(file=out, highlight=False)
    if not console.is_terminal:  # a log or a pipe: wide enough for one line a node
        console = Console(file=out, highlight=False, width=max(console.width, 150))
    t = Table(title=f"fpmon demo, {result['duration_s']:g} s", title_justify="left")
    for col in ("node", "expected", "health", "verdicts", "attributed to", "alerts", "result"):
        t.add_column(col, overflow="fold", no_wrap=col in ("node", "expected"))
    for n in result["nodes"]:
        cells = (
            n["node"], n["expect"], n["health"], _counts(n["verdicts"]),
            _counts(n["attributions"]), _counts(n["alerts"]),
            ("PASS: " if n["pass"] else "FAIL: ") + n["why"],
        )  # fmt: skip
        t.add_row(*(Text(c) for c in cells))  # text, not Rich markup
    console.print(t)
    for p in result["problems"]:
        console.print(f"problem: {p}", markup=False)
    if result["pass"]:
        console.print("PASS: the honest node clean, every cheat flagged for what it did")
    else:
        console.print(f"FAIL: {', '.join(result['failed']) or 'a process died'}", markup=False)


def run(args: argparse.Namespace) -> int:
    from fpmon import themes

    theme = getattr(args, "demo_theme", None) or getattr(args, "theme", None) or "fpmon-dark"
    if not args.headless:
        themes.load_theme(theme)  # unknown theme: say so before starting a fleet
    if args.duration <= 0:
        raise FpmonError("--duration must be a positive number of seconds")
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        tmp = None
    else:
        tmp = tempfile.TemporaryDirectory(prefix="fpmon-demo-")
        workdir = Path(tmp.name)
    fleet = Fleet(workdir, args.base_port)

    def on_sigterm(*_: Any) -> None:
        raise KeyboardInterrupt  # unwind through `finally`: children are stopped there

    old = signal.signal(signal.SIGTERM, on_sigterm)
    pointer: Path | None = None
    try:
        fleet.start()
        pointer = announce(workdir / "monitor.toml")
        if args.headless:
            result = headless(fleet, args.duration, lambda p: print(p, file=sys.stderr))
            if args.json:
                json.dump(result, sys.stdout, indent=1)
                sys.stdout.write("\n")
            else:
                print_summary(result)
            return 0 if result["pass"] else 1
        from fpmon.monitor.app import MonitorApp, tune_gc

        cfg = fleet.monitor_config()
        cfg.monitor.theme = theme
        app = MonitorApp(cfg, problems=fleet.problems)
        app.title = "fpmon demo"
        tune_gc()
        app.run()
        return 0
    finally:
        if pointer is not None:
            pointer.unlink(missing_ok=True)
        fleet.stop()
        signal.signal(signal.SIGTERM, old)
        if tmp is not None:
            tmp.cleanup()
