"""`fpmon replay` (the daemon), `fpmon replay verdicts` (read the store), `fpmon hub`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from fpmon.errors import FpmonError
from fpmon.logs import fields, setup_json_logging
from fpmon.wire import Verdict

log = logging.getLogger("fpmon.replay")

UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str) -> float:
    """'90s', '15m', '1h', '2d' -> seconds."""
    t = text.strip().lower()
    if len(t) < 2 or t[-1] not in UNITS or not t[:-1].replace(".", "", 1).isdigit():
        raise FpmonError(f"--since {text!r}: use a number and a unit, like 90s, 15m, 1h or 2d")
    return float(t[:-1]) * UNITS[t[-1]]


def _config_arg(p: argparse.ArgumentParser, what: str) -> None:
    # SUPPRESS: a subcommand's default must not wipe `fpmon --config X replay` (same dest).
    p.add_argument("--config", default=argparse.SUPPRESS, help=what)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "replay",
        help="the verifier: check chains, sample, open, replay, judge",
        description="Run the replay daemon (the verifier) from a TOML config.",
    )
    _config_arg(p, "daemon config (TOML), see deploy/replay.example.toml")
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    p.set_defaults(func=run_daemon)
    rsub = p.add_subparsers(dest="replay_command", metavar="ACTION")
    v = rsub.add_parser("verdicts", help="list verdicts from the daemon's store")
    _config_arg(v, "daemon config (TOML); its store is read")
    v.add_argument("--store", help="read this SQLite store instead of the config's")
    v.add_argument("--since", default="1h", help="how far back: 90s, 15m, 1h, 2d (default 1h)")
    v.add_argument("--node", help="only this node")
    v.add_argument("--status", help="only this status (match, mismatch, ...)")
    v.add_argument("--json", action="store_true", help="one JSON array, full verdicts")
    v.set_defaults(func=run_verdicts)
    i = rsub.add_parser(
        "interference",
        help="replay a record under side work on other CUDA "
        "streams: numerics movement and slowdown per intensity",
    )
    i.add_argument("--fp", required=True, help="fingerprint file (from `fpmon capture`)")
    i.add_argument("--index", type=int, default=0, help="which record of the file (default 0)")
    i.add_argument("--model", help="model spec to load (default: the record's model name)")
    i.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    i.add_argument("--intensities", default="0.25,0.5,1.0", help="duty cycles in (0, 1]")
    i.add_argument(
        "--kinds",
        default="compute,memory,process",
        help="side work: compute (matmuls, another stream), memory (HBM copies, another "
        "stream), process (matmuls in another process)",
    )
    i.add_argument("--repeats", type=int, default=5, help="timed replays per condition")
    i.add_argument("--out", help="write the profile JSON here ([timing] interference_profile)")
    i.set_defaults(func=run_interference_cmd)
    h = sub.add_parser("hub", help="XSUB/XPUB forwarder binding Curve keys to node names")
    _config_arg(h, "hub config (TOML), see deploy/hub.example.toml")
    h.add_argument("--log-level", default="info", choices=("debug", "info", "warning"))
    h.set_defaults(func=run_hub)


def _need_config(args: argparse.Namespace, cmd: str) -> str:
    path = getattr(args, "config", None)
    if not path:
        raise FpmonError(f"`fpmon {cmd}` needs --config FILE (see deploy/{cmd}.example.toml)")
    return str(path)


def _on_signals(stop: Any) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop())


def run_daemon(args: argparse.Namespace) -> int:
    from fpmon.replay import config
    from fpmon.replay.daemon import ReplayDaemon

    setup_json_logging(args.log_level.upper())
    cfg = config.load(_need_config(args, "replay"))
    threads = cfg.replay.threads or (1 if cfg.replay.device == "cpu" else 0)
    if threads:
        # The prover's CPU agents run one thread each; replay the same way, so time compares
        # like with like and co-located processes do not spin against each other.
        import torch

        torch.set_num_threads(threads)
    daemon = ReplayDaemon(cfg)
    _on_signals(daemon.stop)
    daemon.start()
    log.info(
        "replay daemon verifying",
        extra=fields(
            nodes=len(cfg.nodes),
            verdicts=daemon.endpoints.get("publish", cfg.replay.hub_xsub),
            state=daemon.endpoints["state"],
            store=str(cfg.replay.store),
            verifier_key=daemon.verifier_public.hex(),  # monitors' [monitor] verifier_key
        ),
    )
    daemon.run()
    return 0


def _store_path(args: argparse.Namespace) -> Path:
    if args.store:
        return Path(args.store)
    from fpmon.replay import config

    return config.load(_need_config(args, "replay")).replay.store


def run_verdicts(args: argparse.Namespace) -> int:
    path = _store_path(args)
    if not path.exists():
        raise FpmonError(f"{path}: no verdict store yet; has `fpmon replay` run with this config?")
    since = time.time() - parse_since(args.since)
    q = "SELECT body FROM verdicts WHERE t >= ?"
    params: list[Any] = [since]
    if args.node:
        q += " AND node = ?"
        params.append(args.node)
    if args.status:
        q += " AND status = ?"
        params.append(args.status)
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = db.execute(q + " ORDER BY t", params).fetchall()
        db.close()
    except sqlite3.DatabaseError as e:
        raise FpmonError(f"{path}: not a replay verdict store ({e})") from None
    dec = msgspec.msgpack.Decoder(Verdict)
    try:
        verdicts = [dec.decode(r[0]) for r in rows]
    except msgspec.DecodeError as e:
        raise FpmonError(f"{path}: a verdict this version cannot read ({e})") from None
    if args.json:
        sys.stdout.write(msgspec.json.format(msgspec.json.encode(verdicts), indent=1).decode())
        print()
        return 0
    for v in verdicts:
        when = datetime.fromtimestamp(v.t, UTC).strftime("%Y-%m-%d %H:%M:%S")
        why = v.reason
        if v.attribution and v.attribution[0].exact:
            best = v.attribution[0]
            why = f"reproduced by {best.field}={best.changes}"
        cross = " cross-device" if v.cross_gpu else ""
        print(f"{when}  {v.node:<12} {v.seq:>8}  {v.status:<13}{cross} {why}".rstrip())
    print(f"{len(verdicts)} verdict(s)", file=sys.stderr)
    return 0


def run_interference_cmd(args: argparse.Namespace) -> int:
    from fpmon.records import load_fingerprint
    from fpmon.replay.interference import KINDS, run_interference

    kinds = tuple(k for k in args.kinds.split(",") if k)
    if not kinds or any(k not in KINDS for k in kinds):
        raise FpmonError(f"--kinds: choose from {', '.join(KINDS)}")
    try:
        levels = [float(x) for x in args.intensities.split(",")]
    except ValueError:
        raise FpmonError("--intensities: give fractions like 0.25,0.5,1.0") from None
    if not levels or any(not 0 < x <= 1 for x in levels):
        raise FpmonError("--intensities: each must be in (0, 1]")
    records, _ = load_fingerprint(Path(args.fp))
    if not 0 <= args.index < len(records):
        raise FpmonError(f"--index {args.index}: {args.fp} holds {len(records)} record(s)")
    rec = records[args.index]
    import torch

    if not torch.cuda.is_available():
        out = {
            "skipped": True,
            "reason": "torch.cuda.is_available() is false: interference tests need a CUDA device",
        }
    else:
        from fpmon.replay.engines import hf_factory

        engine = hf_factory(args.model or rec.model, rec.setup, args.device)
        out = run_interference(engine, rec, levels, kinds=kinds, repeats=args.repeats)
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


def run_hub(args: argparse.Namespace) -> int:
    from fpmon.replay.hub import Hub, load_config

    # Drop counts go to the log every log_every_s: INFO by default, or nobody sees them.
    setup_json_logging(args.log_level.upper())
    hub = Hub(load_config(_need_config(args, "hub")))
    stop = threading.Event()
    _on_signals(stop.set)
    hub.start()
    log.info("hub forwarding", extra=fields(**hub.endpoints))
    while not stop.wait(0.5):
        pass
    hub.stop()
    return 0
