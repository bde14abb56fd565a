"""`fpmon capture`: run prompts under a setup and write a fingerprint file."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fpmon.engines.factory import EngineSpec, build
from fpmon.errors import FpmonError


def parse_layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    try:
        return sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError as e:
        raise FpmonError(f"--layers takes comma-separated layer numbers, got {text!r}") from e


def add_setup_args(p: argparse.ArgumentParser) -> None:
    """Options naming a setup; shared by capture and the lab."""
    p.add_argument(
        "--model",
        default="tiny",
        help="tiny, random:<preset> (qwen2.5-0.5b, qwen2.5-1.5b, qwen2.5-7b) or a "
        "local Hugging Face model folder",
    )
    p.add_argument("--engine", default="hf", choices=["hf", "vllm"])
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    p.add_argument("--attn", default="sdpa", choices=["eager", "sdpa"])
    p.add_argument(
        "--sdpa-backend",
        default="default",
        choices=["default", "math", "flash", "efficient", "cudnn"],
    )
    p.add_argument("--compile", action="store_true", help="run under torch.compile")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "capture",
        help="capture an activation fingerprint of prompts",
        description="Run prompts under a setup and write their probes to a .fp file.",
    )
    add_setup_args(p)
    g = p.add_mutually_exclusive_group()
    g.add_argument("--prompt", help="one prompt")
    g.add_argument("--prompts", type=Path, help="a file with one prompt per line")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--slot", type=int, default=0, help="row of the batch the prompt sits in")
    p.add_argument("--decode-steps", type=int, default=16)
    p.add_argument("--layers", help="comma-separated layers to probe (default: a spread)")
    p.add_argument("--topk", type=int, default=8, help="top-k logits to keep per position")
    p.add_argument("--out", type=Path, required=True, help="fingerprint file to write")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.set_defaults(func=run)


def read_prompts(args: argparse.Namespace) -> list[str]:
    if args.prompts:
        if not args.prompts.exists():
            raise FpmonError(f"{args.prompts}: no such prompts file")
        lines = [x.rstrip("\n") for x in args.prompts.read_text().splitlines()]
        prompts = [x for x in lines if x.strip()]
        if not prompts:
            raise FpmonError(f"{args.prompts} holds no prompts: put one prompt per line")
        return prompts
    if args.prompt:
        return [args.prompt]
    raise FpmonError("give --prompt TEXT or --prompts FILE")


def make_engine(args: argparse.Namespace, progress: Any = None) -> Any:
    spec = EngineSpec(
        args.model,
        kind=args.engine,
        dtype=args.dtype,
        attn=args.attn,
        device=args.device,
        compiled=args.compile,
        sdpa_backend=args.sdpa_backend,
    )
    return build(spec, progress)


def run(args: argparse.Namespace) -> int:
    from fpmon.capture import capture_prompts
    from fpmon.engines.base import ProbeSpec, default_layers
    from fpmon.progress import Progress
    from fpmon.records import save_fingerprint

    if args.batch_size < 1:
        raise FpmonError(f"--batch-size must be at least 1, got {args.batch_size}")
    if not 0 <= args.slot < args.batch_size:
        raise FpmonError(
            f"--slot {args.slot} must be below --batch-size {args.batch_size} "
            f"(slots are numbered 0 to {args.batch_size - 1})"
        )
    if args.decode_steps < 0:
        raise FpmonError("--decode-steps cannot be negative")
    if not args.out.parent.exists():
        raise FpmonError(f"{args.out.parent}: no such folder for --out")
    prompts = read_prompts(args)
    progress = Progress()
    engine = make_engine(args, progress)
    chosen = parse_layers(args.layers)
    layers = chosen or default_layers(engine.num_layers)
    skipped = [n for n in range(engine.num_layers) if n not in layers]
    records = capture_prompts(
        engine,
        prompts,
        batch_size=args.batch_size,
        slot=args.slot,
        decode_steps=args.decode_steps,
        probes=ProbeSpec(tuple(layers), topk=args.topk),
        progress=progress,
    )
    save_fingerprint(args.out, records, {"prompts": prompts})
    summary = {
        "out": str(args.out),
        "model": engine.model_name,
        "weights_digest": engine.weights_digest,
        "setup": records[0].setup.to_map(),
        "layers": layers,
        "layers_skipped": skipped,
        "records": [
            {
                "request_id": r.request_id,
                "prompt_tokens": len(r.prompt_ids),
                "output_ids": r.output_ids,
                "digest": r.digest().hex(),
                "probes_digest": r.probes_digest().hex(),
                "completion": engine.decode(r.output_ids),
            }
            for r in records
        ],
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        print()
    else:
        print(f"model    {engine.model_name} (weights {engine.weights_digest[:16]}…)")
        print(f"setup    {records[0].setup.summary()}")
        print(f"layers   {layers_line(layers, skipped, engine.num_layers, chosen is None)}")
        for r in summary["records"]:
            same = "the probe tensors: equal for bit-identical captures"
            print(f"probes   {r['probes_digest'][:16]}…  {same}")
            print(
                f"record   {r['digest'][:16]}…  also covers the request id and capture time, so it "
                "differs on every run (compare probes with `fpmon compare`); "
                f"{r['prompt_tokens']} prompt tokens, {len(r['output_ids'])} generated: "
                f"{r['completion']!r}"
            )
        print(f"wrote    {args.out}")
    return 0


def layers_line(layers: list[int], skipped: list[int], total: int, default: bool) -> str:
    """The probed layers, and for the default list why it leaves some out (one line)."""
    text = f"{', '.join(map(str, layers))} of {total}"
    if not default or not skipped:
        return text
    # Why not every layer: docs/lab/RESULTS.md's probe sweep found every change at about the
    # same size from layer 2 on, while each probed layer costs bytes in every record.
    return (
        f"{text} (default: 0, 1, the quarters and the last; past layer 1 a change measured "
        'about the same size at every layer, docs/lab/RESULTS.md "Probe sweep"); '
        f"not probed: {', '.join(map(str, skipped))} (each layer adds bytes to every record; "
        "--layers picks any)"
    )
