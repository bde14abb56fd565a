"""Fixtures shared by the functional tests: waiting on a feed's inbox and on the daemon's
alerts, the monitor's fixed demo fleet, and the `systemd-analyze verify` root for the units."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import zmq

from fpmon.monitor.model import FleetModel
from fpmon.testing import synth
from fpmon.wire import NodeSummary, StateRequest, decode, encode

if TYPE_CHECKING:
    from fpmon.monitor.feed import Inbox
    from fpmon.replay.daemon import ReplayDaemon


def _collect(inbox: Inbox, want, timeout: float = 10.0) -> list:
    got: list = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got += inbox.drain()
        if want(got):
            return got
        time.sleep(0.02)
    raise AssertionError(f"feed did not deliver in time: {got[-5:]}")


@pytest.fixture(scope="session")
def collect() -> Callable[..., list]:
    """`collect(inbox, want, timeout=10.0)`: drain `inbox` until `want(everything so far)`."""
    return _collect


def _wait_alert(d: ReplayDaemon, kind: str, timeout: float = 20.0) -> dict:
    """Poll the daemon's state endpoint (a real DEALER) until an alert of `kind` shows."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(d.endpoints["state"])
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dealer.send_multipart(encode(StateRequest(node="t", t=time.time())))
            if dealer.poll(2000):
                state = decode(dealer.recv_multipart(), expect=("state",))
                found = [a.to_map() for a in state.alerts if a.kind == kind]
                if found:
                    return found[0]
            time.sleep(0.2)
    finally:
        dealer.close()
    raise AssertionError(f"no {kind} alert within {timeout} s")


@pytest.fixture(scope="session")
def wait_alert() -> Callable[..., dict]:
    """`wait_alert(daemon, kind, timeout=20.0)`: the first alert of `kind` in its state."""
    return _wait_alert


# -- the monitor's demo fleet, for the snapshot and dashboard tests -----------------------------
T0 = 1_790_000_000.0  # fixed wall time for verdicts and alerts


def _fixed(msg: Any) -> Any:
    return decode(encode(msgspec.structs.replace(msg, t=T0)))


def _demo_model() -> FleetModel:
    """The demo fleet, plus a node doing hidden work beside honest numerics (its verdicts
    match; its GPU activity and a foreign process give it away)."""
    clock = [1000.0]
    m = FleetModel(clock=lambda: clock[0])
    cheats = {"batch": ("batch_size", 4), "attn": ("attn_impl", "eager"),
              "dtype": ("dtype", "bfloat16")}  # fmt: skip
    for step in range(8):
        for node in ("honest", *cheats, "tamper"):
            m.apply(_fixed(synth.telemetry(f"node-{node}", gpus=8, util=30 + 8 * step)))
            m.apply(_fixed(synth.commit(f"node-{node}", step)))
        m.apply(_fixed(synth.gpm_telemetry("node-hidden", hidden=step >= 4)))
        m.apply(_fixed(synth.commit("node-hidden", step)))
        m.apply(_fixed(synth.verdict("node-honest", step)))
        m.apply(_fixed(synth.verdict("node-hidden", step)))
        for node, (field, value) in cheats.items():
            m.apply(_fixed(synth.verdict(f"node-{node}", step, "mismatch", field, value)))
        m.apply(_fixed(synth.verdict("node-tamper", step, "bad_opening")))
        # The verifier's accounting windows, as the periodic state refreshes bring them.
        windows = {
            "node-honest": synth.capacity_window(T0 + 60 * step, hidden=False),
            "node-hidden": synth.capacity_window(T0 + 60 * step, hidden=step >= 4),
        }
        m.apply(synth.state({n: NodeSummary(accounting=w) for n, w in windows.items()}, t=T0))
        clock[0] += 1.0
        m.tick()
    m.apply(_fixed(synth.alert("node-tamper", "bad_opening", 3)))
    m.apply(_fixed(synth.alert("node-batch", "mismatch", 2)))
    for n in range(3):
        for a in synth.hidden_alerts("node-hidden", n, t=T0 + n):
            m.apply(a)
    return m


@pytest.fixture(scope="session")
def demo_model() -> Callable[[], FleetModel]:
    """`demo_model()`: a fresh FleetModel of the fixed demo fleet (fixed wall time and clock)."""
    return _demo_model


# -- `systemd-analyze verify` on a unit, in a root laid out as installed -------------------------
SYSTEM_UNITS = next(
    (
        p
        for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
        if (p / "sysinit.target").exists()
    ),
    None,
)


def _verify_unit(
    tmp_path: Path, text: str, name: str = "fpmon-agent.service"
) -> subprocess.CompletedProcess[str]:
    """Verify `text` as /etc/systemd/system/`name` in a root where the ExecStart binary exists
    (as after installing), so the shipped unit is checked unchanged."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/fpmon/.venv/bin/fpmon"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = root / "etc/systemd/system" / name
    unit.parent.mkdir(parents=True)
    unit.write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def verify_unit() -> Callable[..., subprocess.CompletedProcess[str]]:
    """`verify_unit(tmp_path, text, name="fpmon-agent.service")`: `systemd-analyze verify` on
    `text` installed as `name`. Skips the test where systemd-analyze is not installed."""
    if shutil.which("systemd-analyze") is None or SYSTEM_UNITS is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd; .ci/run does)")
    return _verify_unit
