"""The `fpmon` command line. Each subsystem registers its own subcommands.

This is the composition root: it may import `agents`, `replay` and `monitor` (lazily, to keep
`fpmon compare` fast); they never import each other.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from fpmon import __version__
from fpmon.errors import FpmonError

# Modules exposing `register(subparsers)`; each adds its commands with set_defaults(func=...).
COMMAND_MODULES = (
    "fpmon.cli.capture",
    "fpmon.cli.compare",
    "fpmon.lab.cli",
    "fpmon.agents.cli",
    "fpmon.replay.cli",
    "fpmon.monitor.cli",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fpmon",
        description="Check that inference nodes ran exactly the computation they declared. "
        "With no command, opens the dashboard.",
    )
    parser.add_argument("--version", action="version", version=f"fpmon {__version__}")
    parser.add_argument("--config", help="monitor config (TOML) for the dashboard")
    parser.add_argument("--theme", help="dashboard theme name (from themes/)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name and name.startswith(e.name):
                continue  # a subsystem not installed in this build
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    func = getattr(args, "func", None)
    if func is None:
        try:
            from fpmon.monitor.cli import run_dashboard
        except ModuleNotFoundError:
            parser.print_help()
            return 2
        func = run_dashboard
    try:
        return int(func(args) or 0)
    except FpmonError as e:
        print(f"fpmon: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fpmon: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
