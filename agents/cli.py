"""`fpmon agent`, `fpmon agent stats`, `fpmon keygen`, `fpmon submit`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError


def register(sub: Any) -> None:
    p = sub.add_parser("agent", help="run the node agent (serve, log, commit, publish)")
    p.add_argument("--config", dest="agent_config", metavar="FILE", help="agent config (TOML)")
    p.add_argument("--stats", action="store_true", help="print the log's stats and exit")
    p.add_argument(
        "--insecure-loopback",
        action="store_true",
        help="run without --config: Curve off, loopback ports 7700-7702, a new signing key in "
        "./fpmon-agent-state (a local try-out, never a deployment)",
    )
    p.set_defaults(func=run_agent)
    asub = p.add_subparsers(dest="agent_command", metavar="SUBCOMMAND")
    s = asub.add_parser("stats", help="records, bytes per generated token, chain head, uptime")
    s.add_argument("--config", dest="agent_config", metavar="FILE", help="agent config (TOML)")
    s.add_argument("--json", action="store_true", help="one JSON object instead of text")
    s.set_defaults(func=run_stats)

    k = sub.add_parser("keygen", help="make a Curve keypair and an Ed25519 signing key (0600)")
    k.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    k.add_argument("--name", default="agent", help="Curve key file stem (default: agent)")
    k.set_defaults(func=run_keygen)

    m = sub.add_parser("submit", help="send one generation request to an agent")
    m.add_argument("--agent", default="tcp://127.0.0.1:7700", metavar="ENDPOINT")
    m.add_argument("--prompt", required=True)
    m.add_argument("--max-tokens", type=int, default=32)
    m.add_argument("--timeout", type=float, default=60.0, metavar="S")
    m.add_argument("--client-key", metavar="FILE", help="our Curve .key_secret (curve on)")
    m.add_argument("--agent-key", metavar="FILE", help="the agent's Curve public .key (curve on)")
    m.add_argument("--json", action="store_true", help="print the whole reply as JSON")
    m.set_defaults(func=run_submit)


def _config_path(args: argparse.Namespace) -> str | None:
    return getattr(args, "agent_config", None) or getattr(args, "config", None)


def run_agent(args: argparse.Namespace) -> int:
    if args.stats:
        args.json = False
        return run_stats(args)
    from fpmon.agents.config import load_config
    from fpmon.logs import setup_json_logging

    path = _config_path(args)
    if path is None and not getattr(args, "insecure_loopback", False):
        # As `replay` and `hub`: no serving with Curve off and a signing key made in whatever
        # folder this happened to start in, unless asked for in so many words.
        raise FpmonError(
            "`fpmon agent` needs --config FILE (see deploy/agent.example.toml); "
            "--insecure-loopback runs a local try-out without one (Curve off)"
        )
    setup_json_logging()
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    cfg = load_config(path)  # before the heavy imports: bad files fail fast
    if path is None:
        print(
            "fpmon agent: --insecure-loopback: no config, Curve off, loopback only, state and "
            f"signing key in {cfg.state_dir}",
            file=sys.stderr,
        )
    from fpmon.agents.node import Agent

    return Agent(cfg).run()


# The agent rewrites its status every second; older than this, what it says is not now.
STALE_AFTER_S = 5.0
STATUS_KEYS = (
    "probes",
    "setup",
    "torch_threads",
    "rejects",
    "faults",
    "auth_denied",
    "refusing",
    "pubkey",
    "redteam",
)


def stats_map(cfg: Any) -> dict[str, Any]:
    from fpmon.agents.store import RecordLog

    if not cfg.db_path.exists():
        raise FpmonError(f"{cfg.db_path}: no record log yet; start the agent with this config")
    log = RecordLog(cfg.db_path, node=cfg.node, readonly=True)  # StoreError: one line, exit 2
    try:
        st = log.stats()
    finally:
        log.close()
    out: dict[str, Any] = {
        "node": cfg.node,
        "records": st.records,
        "stored": st.stored,
        "purged": st.records - st.stored,
        "stored_bytes": st.body_bytes,
        "generated_tokens": st.tokens,
        "bytes_per_token": round(st.bytes_per_token, 1),
        "head_seq": st.head_seq,
        "head_chain": st.head_chain.hex(),
        "running": False,
    }
    out.update(_status_part(cfg.status_path))
    return out


def _status_part(path: Path) -> dict[str, Any]:
    """What the agent's status file says, and how old it is (a full disk freezes it)."""
    try:
        status = json.loads(path.read_text())
        age = time.time() - float(status["updated_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    alive = _alive(int(status.get("pid", 0)))
    out: dict[str, Any] = {
        "running": alive,
        "pid": status.get("pid"),
        "status_age_s": round(age, 1),
        "status_stale": alive and age > STALE_AFTER_S,
        "uptime_s": round(time.time() - status.get("started_at", time.time()), 1) if alive else 0.0,
    }
    out.update({k: status.get(k) for k in STATUS_KEYS})
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_stats(args: argparse.Namespace) -> int:
    from fpmon.agents.config import load_config

    s = stats_map(load_config(_config_path(args)))
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"node             {s['node']}")
    print(f"records          {s['records']} ({s['stored']} stored, {s['purged']} purged)")
    print(f"stored bytes     {s['stored_bytes']}")
    print(f"bytes per token  {s['bytes_per_token']} (generated tokens: {s['generated_tokens']})")
    if s.get("probes"):
        p = s["probes"]
        print(f"probe budget     layers {p['layers']}, top-{p['topk']}")
    print(f"chain head       seq {s['head_seq']} {s['head_chain']}")
    if s.get("setup"):
        print(f"running setup    {s['setup']}, {s.get('torch_threads')} torch threads")
    if s["running"]:
        print(f"uptime           {s['uptime_s']:.0f} s (running, pid {s['pid']})")
    else:
        print("uptime           not running")
    if s.get("status_stale"):
        print(
            f"STALE STATUS     status file {s['status_age_s']:.0f} s old: the agent cannot "
            "write it (full disk? see its log), is hung, or is gone and its pid reused; "
            "figures below are from then"
        )
    if s.get("refusing"):
        print(f"REFUSING WORK    {s['refusing']}")
    if s.get("rejects"):
        print(f"rejected frames  {json.dumps(s['rejects'])}")
    faults = {k: v for k, v in (s.get("faults") or {}).items() if v}
    if faults:
        print(f"node faults      {json.dumps(faults)}")
    return 0


def run_keygen(args: argparse.Namespace) -> int:
    from fpmon.agents.keys import keygen

    out = keygen(Path(args.out), args.name)
    print(f"curve public key   {out['curve_public']}  (give to peers' allowlists)")
    print(f"curve secret key   {out['curve_secret']}  (stays here, 0600)")
    print(f"signing key        {out['signing_key']}  (stays here, 0600)")
    print(f"signing public key {out['signing_public_hex']}  (give to the replay daemon)")
    return 0


def run_submit(args: argparse.Namespace) -> int:
    from fpmon.agents.client import submit

    if bool(args.client_key) != bool(args.agent_key):
        raise FpmonError("curve needs both --client-key (our .key_secret) and --agent-key")
    curve = (args.client_key, args.agent_key) if args.client_key else None
    reply = submit(args.agent, args.prompt, args.max_tokens, args.timeout, curve=curve)
    if args.json:
        print(json.dumps(reply.to_map(), default=lambda b: b.hex()))
    elif reply.status == "ok":
        print(reply.completion)
        print(f"[seq {reply.seq}, {len(reply.output_ids)} tokens]", file=sys.stderr)
    if reply.status != "ok":
        raise FpmonError(f"agent {reply.status}: {reply.reason}")
    return 0
