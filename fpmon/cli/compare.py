"""`fpmon compare A B`: per probe and layer, like diff: exit 0 equal, 1 different, 2 error."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="compare two fingerprint files",
        description="Compare two fingerprints per probe and layer. Exit 0 if "
        "bit-identical, 1 if different, 2 on error.",
    )
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--json", action="store_true", help="machine-readable result")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fpmon.compare import compare_records
    from fpmon.records import load_fingerprint

    ra, _ = load_fingerprint(args.a)
    rb, _ = load_fingerprint(args.b)
    if len(ra) != len(rb):
        raise FpmonError(
            f"{args.a} holds {len(ra)} records and {args.b} holds {len(rb)}: compare captures "
            "of the same prompts"
        )
    results = [compare_records(a, b) for a, b in zip(ra, rb, strict=True)]
    identical = all(c.identical for c in results)
    if args.json:
        json.dump(
            {
                "identical": identical,
                "a_setup": ra[0].setup.to_map(),
                "b_setup": rb[0].setup.to_map(),
                "records": [c.to_map() for c in results],
            },
            sys.stdout,
            indent=2,
        )
        print()
        return 0 if identical else 1
    print(f"A  {args.a}: {ra[0].setup.summary()}")
    print(f"B  {args.b}: {rb[0].setup.summary()}")
    changed = ra[0].setup.numeric_diff(rb[0].setup)
    if changed:
        print(f"declared setups differ in: {', '.join(changed)}")
    for i, c in enumerate(results):
        if len(results) > 1:
            print(f"\nrecord {i}")
        for note in c.notes:
            print(f"note: {note}")
        print(
            f"{'probe':<22} {'same':<5} {'L2':>11} {'relative':>11} {'max ULP':>9} {'differ':>13}"
        )
        for p in c.probes:
            mark = "yes" if p.identical else "NO"
            ulp = "n/a" if p.max_ulp < 0 else p.max_ulp
            print(
                f"{p.probe:<22} {mark:<5} {p.l2:>11.4g} {p.rel:>11.4g} {ulp:>9} "
                f"{p.n_diff:>6}/{p.n:<6}"
            )
    if identical:
        print("\nbit-identical")
        return 0
    layers = sorted({p.layer for c in results for p in c.differing() if p.layer is not None})
    others = sorted({p.probe for c in results for p in c.differing() if p.layer is None})
    what = []
    if layers:
        what.append(f"keys at layers {', '.join(map(str, layers))}")
    what += others
    print(f"\nDIFFERENT: {'; '.join(what)}")
    return 1
