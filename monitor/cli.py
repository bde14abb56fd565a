"""`fpmon` (the dashboard), `fpmon dashboard`, `fpmon snapshot`, `fpmon demo`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fpmon.errors import FpmonError

if TYPE_CHECKING:
    from fpmon.monitor.config import MonitorConfig


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("dashboard", help="the live dashboard (what bare `fpmon` opens)")
    _dashboard_args(d)
    d.set_defaults(func=run_dashboard)

    s = sub.add_parser(
        "snapshot",
        help="print the fleet's current state once, without the UI "
        "(with neither --state nor --config: the running `fpmon demo`)",
    )
    s.add_argument("--config", help="monitor config (TOML); its [monitor] state endpoint is used")
    s.add_argument("--state", help="replay daemon's state endpoint (overrides the config)")
    s.add_argument("--timeout", type=float, default=3.0, help="seconds to wait (default 3)")
    s.add_argument("--json", action="store_true", help="JSON on stdout (for scripts)")
    s.set_defaults(func=run_snapshot)

    m = sub.add_parser("demo", help="a local fleet, verifier and dashboard, one command, no GPU")
    m.add_argument("--headless", action="store_true", help="no UI: run, then print a summary")
    m.add_argument("--duration", type=float, default=60.0, help="headless run length, seconds")
    m.add_argument("--json", action="store_true", help="headless summary as JSON on stdout")
    m.add_argument("--theme", dest="demo_theme", help="dashboard theme")
    m.add_argument("--workdir", help="keep configs, keys and logs here (default: a temp dir)")
    m.add_argument("--base-port", type=int, default=0,
                   help="first loopback port (default: free ports picked at random)")  # fmt: skip
    m.set_defaults(func=run_demo)


def _dashboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", dest="dash_config", help="monitor config (TOML)")
    p.add_argument("--theme", dest="dash_theme", help="theme name (files in themes/)")
    p.add_argument("--endpoint", action="append", default=[],
                   help="SUB endpoint (hub XPUB or a publisher); repeatable")  # fmt: skip
    p.add_argument("--state", help="replay daemon's state endpoint (Clone snapshot at start)")
    p.add_argument("--record", help="record the received feed to this file")
    p.add_argument("--play", help="play a recorded feed back (with seek) instead of connecting")
    p.add_argument("--inspector", action="store_true", help="read-only: no acknowledge/export")
    p.add_argument(
        "--export-dir", help="where `x` writes verdicts (default ~/.local/share/fpmon/exports)"
    )


def dashboard_config(args: argparse.Namespace) -> MonitorConfig:
    from fpmon.monitor.config import check_endpoint, load_config

    path = getattr(args, "dash_config", None) or getattr(args, "config", None)
    cfg = load_config(path)
    theme = getattr(args, "dash_theme", None) or getattr(args, "theme", None)
    if theme:
        cfg.monitor.theme = theme
    for ep in getattr(args, "endpoint", []) or []:
        cfg.monitor.endpoints.append(check_endpoint(ep, "--endpoint"))
    if getattr(args, "state", None):
        cfg.monitor.state = check_endpoint(args.state, "--state")
    if getattr(args, "record", None):
        cfg.monitor.record = Path(args.record)
    if getattr(args, "inspector", False):
        cfg.monitor.inspector = True
    if getattr(args, "export_dir", None):
        cfg.monitor.export_dir = Path(args.export_dir)
    return cfg


def run_dashboard(args: argparse.Namespace) -> int:
    from fpmon import themes

    cfg = dashboard_config(args)
    themes.load_theme(cfg.monitor.theme)  # unknown theme: one clear line before any UI starts
    play = getattr(args, "play", None)
    if not play and not cfg.monitor.endpoints and not cfg.monitor.state:
        raise FpmonError(
            "nothing to watch: give --config monitor.toml (see deploy/monitor.example.toml), "
            "--endpoint tcp://HOST:PORT, or run `fpmon demo`"
        )
    from fpmon.monitor.app import MonitorApp, check_keymap, tune_gc

    check_keymap(cfg.keymap)
    app = MonitorApp(cfg, play=play)
    tune_gc()
    app.run()
    return 0


def run_snapshot(args: argparse.Namespace) -> int:
    from fpmon.monitor.config import check_endpoint, load_config
    from fpmon.monitor.feed import state_snapshot
    from fpmon.monitor.format import jsonable
    from fpmon.monitor.model import FleetModel

    config = args.config
    if config is None and not args.state:
        from fpmon.monitor.demo import running_demo

        config = running_demo()  # `fpmon snapshot --json` beside a running `fpmon demo`
    cfg = load_config(config)
    endpoint = check_endpoint(args.state, "--state") if args.state else cfg.monitor.state
    if not endpoint:
        raise FpmonError(
            "no state endpoint: give --state tcp://HOST:PORT or --config with [monitor] state "
            "(with neither, a running `fpmon demo` is used, and none is running)"
        )
    model = FleetModel(cfg.limits)
    model.apply_state(
        state_snapshot(endpoint, args.timeout, cfg.curve, verifier_key=cfg.monitor.verifier_key)
    )
    model.tick()
    data = model.to_json()
    if args.json:
        json.dump(data, sys.stdout, indent=1, default=jsonable)
        sys.stdout.write("\n")
        return 0
    print(f"{'node':<16} {'health':<12} {'commits':>8} {'verdicts':<40} attributions")
    for n in data["nodes"]:
        verdicts = " ".join(f"{k}={v}" for k, v in sorted(n["verdicts"].items()))
        atts = " ".join(f"{k}={v}" for k, v in sorted(n["attributions"].items()))
        print(f"{n['node']:<16} {n['health']:<12} {n['commits']:>8} {verdicts:<40} {atts}")
    print(f"open alerts: {data['open_alerts']}")
    return 0


def run_demo(args: argparse.Namespace) -> int:
    from fpmon.monitor.demo import run

    return run(args)
