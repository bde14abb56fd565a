"""The demo fleet for real: hub, six agents on the tiny model (five lying), the replay daemon,
the load generator. The dashboard under Pilot must show the honest node green, each cheat
flagged with the right attribution and the hidden-work node alerted for undeclared capacity;
the headless JSON must say the same; `q` and SIGTERM must leave no process running and no port
bound."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from fpmon.monitor.app import MonitorApp, NodeFlagged
from fpmon.monitor.demo import HIDDEN_WORK_ALERTS, NODES, Fleet

pytestmark = pytest.mark.slow


def port_free(endpoint: str) -> bool:
    """No listener holds it (SO_REUSEADDR: connections in TIME_WAIT do not count)."""
    port = int(endpoint.rsplit(":", 1)[1])
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def group_alive(pid: int) -> bool:
    try:
        os.killpg(pid, 0)
        return True
    except ProcessLookupError:
        return False


def test_dashboard_on_a_real_demo_fleet(tmp_path):
    fleet = Fleet(tmp_path)
    seen: list = []
    expected = {n.name: n.expect for n in NODES if n.expect not in ("match", "hidden_work")}
    hidden = next(n.name for n in NODES if n.expect == "hidden_work")

    def capacity_alerts(app, node: str) -> list[str]:
        return [
            e.alert.kind
            for e in app.model.alerts.values()
            if e.alert.node == node and e.alert.kind in HIDDEN_WORK_ALERTS
        ]

    def settled(app) -> bool:
        rows = app.model.nodes
        if set(rows) < {*expected, "node-honest", hidden}:
            return False
        ok = rows["node-honest"].health == "ok" and not capacity_alerts(app, "node-honest")
        # Hidden work leaves every record honest: an alert, never a flag.
        ok = ok and rows[hidden].health == "alert" and bool(capacity_alerts(app, hidden))
        for name, want in expected.items():
            row = rows[name]
            if row.health != "flagged" or row.last_attribution != want:
                return False
        return ok

    async def run() -> None:
        app = MonitorApp(fleet.monitor_config(), problems=fleet.problems)
        async with app.run_test(size=(170, 40), message_hook=seen.append) as pilot:
            for _ in range(900):  # up to 90 s on a busy 2-core machine; ~40 s alone
                if settled(app):
                    break
                await pilot.pause(0.1)
            assert settled(app), {
                n: (r.health, r.last_attribution) for n, r in app.model.nodes.items()
            }
            await pilot.pause(0.6)
            table = app.screen.query_one("#fleet")
            assert str(table.get_cell("node-honest", "health")) == "✓ OK"
            assert str(table.get_cell(hidden, "health")) == "! ALERT"
            for name, want in expected.items():
                assert str(table.get_cell(name, "health")) == "✗ FLAGGED"
                assert str(table.get_cell(name, "attribution")) == want
            flagged = {m.node: m.attribution for m in seen if isinstance(m, NodeFlagged)}
            assert set(flagged) == set(expected)
            # the evidence of the batch cheat: declared batch 1, reproduced by batch >= 2
            table.move_cursor(row=table.get_row_index("node-batch"))
            await pilot.press("enter")
            await pilot.pause(0.3)
            setup = app.screen.query_one("#setup")
            rows = {
                str(setup.get_row_at(i)[0]): setup.get_row_at(i) for i in range(setup.row_count)
            }
            assert rows["batch_size"][1] == "1" and rows["batch_size"][3] == "≠ differs"
            await pilot.press("escape")
            await pilot.press("q")

    fleet.start()
    try:
        asyncio.run(run())
    finally:
        fleet.stop()
    assert not any(group_alive(c.proc.pid) for c in fleet.children)
    endpoints = [fleet.hub_xsub, fleet.hub_xpub, fleet.state, *fleet.intake.values()]
    assert all(port_free(e) for e in endpoints), "a port is still bound"


def test_headless_demo_json_and_clean_stop(tmp_path):
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    # 60 s, the default: the hidden-work node's first capacity window closes 35-50 s after start
    # (the agents load the model, then one 15 s window that waits for the first replay).
    argv = [sys.executable, "-m", "fpmon", "demo", "--headless", "--duration", "60", "--json",
            "--workdir", str(tmp_path)]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=180, env=env)
    data = json.loads(out.stdout) if out.stdout.strip() else {}
    whys = {n["node"]: n["why"] for n in data.get("nodes", []) if not n["pass"]}
    assert out.returncode == 0, (whys, out.stderr[-2000:])
    assert data["duration_s"] >= 60
    assert data["pass"] is True and data["failed"] == [], data["failed"]
    by = {n["node"]: n for n in data["nodes"]}
    assert set(by) == {n.name for n in NODES}
    honest = by["node-honest"]
    assert set(honest["verdicts"]) == {"match"} and honest["attributions"] == {}
    assert honest["declared"] == honest["actual"]
    assert not set(honest["alerts"]) & set(HIDDEN_WORK_ALERTS), honest["alerts"]
    # Hidden work in the engine process: every record honest, its CPU time unexplained.
    hidden = next(n for n in data["nodes"] if n["expect"] == "hidden_work")
    assert set(hidden["verdicts"]) == {"match"} and hidden["declared"] == hidden["actual"]
    assert hidden["alerts"].get("undeclared_capacity", 0) >= 1, hidden
    for field in ("batch_size", "attn_impl", "dtype"):
        node = next(n for n in data["nodes"] if n["expect"] == field)
        assert set(node["verdicts"]) == {"mismatch"}, node
        assert set(node["attributions"]) == {field}, node
        # Every mismatch attributed exactly (a dtype cheat whose tokens differ too included).
        assert node["attribution_status"] == {"exact": node["verdicts"]["mismatch"]}, node
        diff = {k for k in node["declared"] if node["declared"][k] != node["actual"][k]}
        assert diff == {field}
    assert set(by["node-tamper"]["verdicts"]) == {"bad_opening"}
    # Nothing of the fleet survives the demo (each child had its own process group).
    time.sleep(0.5)
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps


def test_sigterm_stops_every_child(tmp_path):
    """Also: the README's `fpmon snapshot --json`, with no endpoint, finds the running demo."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path / "run")}
    argv = [sys.executable, "-m", "fpmon", "demo", "--headless", "--duration", "300",
            "--workdir", str(tmp_path)]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Wait until every child is up (its log exists), then stop the demo from outside.
    for _ in range(200):
        if len(list((tmp_path / "logs").glob("*.log"))) == len(NODES) + 3:
            break
        time.sleep(0.1)
    time.sleep(2)
    try:
        # The replay daemon answers once it has loaded (seconds on a busy machine).
        for _ in range(12):
            snap = subprocess.run([sys.executable, "-m", "fpmon", "snapshot", "--json"],
                                  capture_output=True, text=True, timeout=30, env=env)  # fmt: skip
            if snap.returncode == 0:
                break
        assert snap.returncode == 0, snap.stderr
        assert "nodes" in json.loads(snap.stdout)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert not list((tmp_path / "run" / "fpmon" / "demos").glob("*.toml"))
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps
