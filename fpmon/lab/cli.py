"""`fpmon lab run`, `fpmon lab compare` and `fpmon lab sweep`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError


def register(sub: Any) -> None:
    lab = sub.add_parser(
        "lab",
        help="run the fingerprint experiment battery on a GPU; derive calibration",
        description="Measure what changes activations on this machine (lab run) and derive the "
        "verifier's noise bands and detection rates from two machines (lab compare).",
    )
    lsub = lab.add_subparsers(dest="lab_command", metavar="LAB_COMMAND")
    r = lsub.add_parser("run", help="execute the battery and write raw probes plus a summary")
    r.add_argument("--model", default="tiny", help="tiny, random:<preset> or a model folder")
    r.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    r.add_argument("--prompts", type=int, default=64, help="prompts per setup (>= 64 for rates)")
    r.add_argument("--prompt-len", type=int, default=32, help="tokens per prompt")
    r.add_argument("--decode-steps", type=int, default=16, help="teacher-forced decode steps")
    r.add_argument("--seed", type=int, default=7, help="prompt-set seed (same on every GPU)")
    r.add_argument(
        "--experiments",
        default="all",
        help="comma-separated: repeat,batch,composition,attention,compile,dtype,streams,timing",
    )
    r.add_argument("--skip", default="", help="comma-separated setup names not to run")
    r.add_argument(
        "--layers",
        default="default",
        help="probed layers: default (a spread), all, or comma-separated indices",
    )
    r.add_argument(
        "--keys-keep",
        type=int,
        help="dims of each layer's keys kept raw (e.g. 128: one KV head); digests cover all",
    )
    r.add_argument("--stream-prompts", type=int, default=32, help="prompts per batch-1 load run")
    r.add_argument("--budget-s", type=float, help="stop starting setups after this many seconds")
    r.add_argument("--part", default="main", help="name of this run's files inside --out")
    r.add_argument("--out", type=Path, required=True, help="results folder")
    r.add_argument("--force", action="store_true", help="overwrite this part's results")
    r.set_defaults(func=run_cmd)

    c = lsub.add_parser("compare", help="noise bands, detection rates, calibration file")
    c.add_argument("dir_a", type=Path, help="lab run folder of machine A")
    c.add_argument("dir_b", type=Path, help="lab run folder of machine B (may be A itself)")
    c.add_argument("--out", type=Path, required=True, help="calibration file to write")
    c.add_argument("--report", type=Path, help="Markdown report to write")
    c.add_argument("--plot", type=Path, help="PNG plot (default: next to --report)")
    c.add_argument("--json", type=Path, help="full comparison as JSON")
    c.add_argument(
        "--merge",
        type=Path,
        action="append",
        default=[],
        help="calibration file (same model) whose GPU pairs are added to --out; repeatable",
    )
    c.add_argument("--force", action="store_true", help="overwrite existing outputs")
    c.set_defaults(func=compare_cmd)

    s = lsub.add_parser(
        "sweep",
        help="per probe (every layer probed): each change's distance against honest noise",
    )
    s.add_argument("dir_a", type=Path, help="lab run folder (the prover's GPU)")
    s.add_argument(
        "dir_b",
        type=Path,
        nargs="?",
        help="lab run folder of the same model on another GPU model (honest noise across "
        "devices); without it, honest noise is the repeat on dir_a's GPU",
    )
    s.add_argument(
        "--proxy",
        default="bs8",
        help="one GPU only: the change whose distance stands in for a GEMM-kernel rounding "
        "difference (default bs8); '' for none",
    )
    s.add_argument("--json", type=Path, help="full sweep as JSON")
    s.add_argument("--report", type=Path, help="Markdown table to write")
    s.set_defaults(func=sweep_cmd)
    lab.set_defaults(func=lambda _a: (lab.print_help(), 2)[1])


def run_cmd(args: argparse.Namespace) -> int:
    from fpmon.lab.battery import parse_experiments
    from fpmon.lab.report import run_plot, run_report, run_rows, table
    from fpmon.lab.runner import LabRun, RunOptions

    if args.prompts < 1 or args.stream_prompts < 1:
        raise FpmonError("--prompts and --stream-prompts must be at least 1")
    opts = RunOptions(
        model=args.model,
        device=args.device,
        out=args.out,
        prompts=args.prompts,
        prompt_len=args.prompt_len,
        decode_steps=args.decode_steps,
        seed=args.seed,
        experiments=tuple(parse_experiments(args.experiments)),
        skip=tuple(x.strip() for x in args.skip.split(",") if x.strip()),
        stream_prompts=args.stream_prompts,
        budget_s=args.budget_s,
        part=args.part,
        force=args.force,
        layers=parse_layers(args.layers),
        keys_keep=args.keys_keep,
    )
    if opts.keys_keep is not None and opts.keys_keep < 1:
        raise FpmonError("--keys-keep must be at least 1")
    summary = LabRun(opts).run()
    headers, rows = run_rows(summary)
    print(table(headers, rows))
    (args.out / f"report-{args.part}.md").write_text(run_report(summary))
    if run_plot(summary, args.out / f"plot-{args.part}.png"):
        print(f"plot: {args.out / f'plot-{args.part}.png'}", file=sys.stderr)
    return 0


ALL_LAYERS = (-1,)  # "all": resolved against the model's layer count by the run


def parse_layers(text: str) -> tuple[int, ...]:
    """() for the default spread, ALL_LAYERS for every layer, else the indices given."""
    text = text.strip()
    if text in ("", "default"):
        return ()
    if text == "all":
        return ALL_LAYERS
    try:
        out = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise FpmonError(f"--layers {text!r}: use default, all, or indices like 0,1,7") from None
    if not out or min(out) < 0:
        raise FpmonError(f"--layers {text!r}: use default, all, or indices >= 0")
    return out


def sweep_cmd(args: argparse.Namespace) -> int:
    from fpmon.lab.sweep import run_sweep

    return run_sweep(args.dir_a, args.dir_b, args.proxy, args.json, args.report)


def compare_cmd(args: argparse.Namespace) -> int:
    from fpmon.lab.compare import run_compare

    return run_compare(args)


def main(argv: list[str] | None = None) -> int:
    """Standalone entry (`python -m fpmon.lab ...`): no other subsystem is imported."""
    parser = argparse.ArgumentParser(prog="fpmon")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FpmonError as e:
        print(f"fpmon: error: {e}", file=sys.stderr)
        return 2
