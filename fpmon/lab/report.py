"""Tables and plots: what `lab run` and `lab compare` print and save."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FLOOR = 1e-7  # bit-identical points are drawn at this floor on log plots


def short_probe(name: str) -> str:
    return (
        name.replace("keys.", "")
        .replace("hidden.final(full)", "hid-full")
        .replace("hidden.final", "hid")
        .replace("logits.topk.values", "topv")
        .replace("logits.topk.ids", "topi")
    )


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if x == 0:
        return "0"
    return f"{x:.2e}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    line = " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    out = [line, "-|-".join("-" * w for w in widths)]
    out += [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def run_rows(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "setup",
        "vs",
        "identical",
        "moved probes",
        "prefill max rel",
        "decode median rel",
        "repeat identical",
        "ms/token",
    ]
    rows = []
    for name, s in summary.get("setups", {}).items():
        if not s.get("n"):
            rows.append(
                [name, "-", "0 run", "time budget ended before its first batch"] + ["-"] * 4
            )
            continue
        vs = s.get("vs_ref") or {}
        # top-k ids count differing ids, not a distance: kept out of the distance columns
        rel = {k: v for k, v in vs.get("rel", {}).items() if k != "logits.topk.ids"}
        first = s.get("vs_first")
        rows.append(
            [
                name,
                s.get("ref") or "-",
                f"{vs['identical']}/{vs['n']}" if vs else "-",
                ",".join(short_probe(p) for p in vs.get("moved", {})) or ("none" if vs else "-"),
                fmt(max((r["prefill_max"] for r in rel.values()), default=None)),
                fmt(max((r["decode_median"] for r in rel.values()), default=None)),
                f"{first['identical']}/{first['n']}" if first else "-",
                f"{s['timing']['per_token_ms_median']:.2f}" if s.get("timing") else "-",
            ]
        )
    for name, why in summary.get("skipped", {}).items():
        rows.append([name, "-", "skipped", why, "-", "-", "-", "-"])
    return headers, rows


def run_report(summary: dict[str, Any]) -> str:
    meta = summary["meta"]
    headers, rows = run_rows(summary)
    parts = [
        f"# fpmon lab run: {meta['model']} on {meta['gpu_name']}",
        "",
        f"- weights digest `{meta['weights_digest']}`",
        f"- torch {meta.get('torch')}, CUDA {meta.get('cuda') or '-'}, transformers "
        f"{meta.get('transformers')}, cuDNN {meta.get('cudnn', '-')}",
        f"- prompts: {meta['prompts']}",
        f"- command: `{meta.get('command')}`",
        f"- complete: {summary.get('complete')}, elapsed {summary.get('elapsed_s', 0):.0f} s",
        "",
        md_table(headers, rows),
    ]
    if summary.get("checks"):
        parts += ["", f"Checks: `{summary['checks']}`"]
    if summary.get("busy"):
        parts += ["", f"GPU busy fraction of the declared work: `{summary['busy']}`"]
    return "\n".join(parts) + "\n"


def plot_lines(
    path: Path,
    title: str,
    probes: list[str],
    lines: dict[str, list[float]],
    band: list[float] | None = None,
    band_label: str = "cross-hardware noise",
    band_max: list[float] | None = None,
) -> None:
    """Per-probe distance, log scale; the noise band dashed black."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.5))
    x = list(range(len(probes)))
    for label, ys in lines.items():
        ax.plot(x, [max(y, FLOOR) for y in ys], marker="o", ms=3, lw=1, label=label)
    if band is not None:
        ax.plot(x, [max(y, FLOOR) for y in band], "k--", lw=2.5, label=band_label)
    if band_max is not None:
        ax.plot(x, [max(y, FLOOR) for y in band_max], "k:", lw=2, label="honest max (band)")
    ax.set_yscale("log")
    ax.set_xticks(x, [short_probe(p) for p in probes], rotation=45)
    ax.set_ylabel(f"median relative distance (bit-identical drawn at {FLOOR:g})")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_plot(summary: dict[str, Any], path: Path) -> bool:
    lines: dict[str, list[float]] = {}
    probes: list[str] = []
    for name, s in summary.get("setups", {}).items():
        vs = s.get("vs_ref")
        if not vs or not s.get("change") or not vs.get("rel"):
            continue
        probes = probes or [p for p in vs["rel"] if p != "logits.topk.ids"]
        lines[name] = [vs["rel"].get(p, {}).get("decode_median", 0.0) for p in probes]
    if not lines:
        return False
    meta = summary["meta"]
    plot_lines(
        path,
        f"{meta['model']} on {meta['gpu_name']}: setup change vs base (decode positions)",
        probes,
        lines,
    )
    return True
