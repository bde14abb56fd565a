"""A `lab run` folder read back: its parts' summaries merged and its raw probes loaded."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fpmon.errors import FpmonError
from fpmon.lab.store import Entry, load_entries


@dataclass
class LabResults:
    folder: Path
    gpu: str
    model: str
    weights_digest: str
    prompts_digest: str
    setups: dict[str, dict[str, Any]]  # merged summary lines of every part
    entries: dict[str, dict[int, Entry]]  # setup -> prompt -> entry
    summaries: list[dict[str, Any]] = field(default_factory=list)

    def has(self, setup: str) -> bool:
        return bool(self.entries.get(setup))


def load_results(folder: Path) -> LabResults:
    if not folder.is_dir():
        raise FpmonError(f"{folder}: not a folder; pass a folder written by `fpmon lab run`")
    paths = sorted(folder.glob("summary-*.json"))
    if not paths:
        raise FpmonError(f"{folder}: no summary-*.json; is it a `fpmon lab run --out` folder?")
    summaries = []
    for p in paths:
        try:
            summaries.append(json.loads(p.read_text()))
        except json.JSONDecodeError as e:
            raise FpmonError(f"{p}: not JSON ({e}); run `fpmon lab run` again") from None
    first = summaries[0]["meta"]
    for s, p in zip(summaries[1:], paths[1:], strict=True):
        m = s["meta"]
        for key in ("model", "weights_digest", "gpu_name"):
            if m.get(key) != first.get(key):
                raise FpmonError(
                    f"{p}: {key} {m.get(key)!r} differs from {paths[0].name}'s "
                    f"{first.get(key)!r}: one folder holds one model on one GPU"
                )
        if m["prompts"]["digest"] != first["prompts"]["digest"]:
            raise FpmonError(f"{p}: another prompt set than {paths[0].name}'s")
    raw = sorted(folder.glob("raw-*.bin"))
    if not raw:
        raise FpmonError(f"{folder}: no raw-*.bin probe files; copy them with the summaries")
    loaded, _metas = load_entries(raw)
    entries: dict[str, dict[int, Entry]] = {}
    for entry in loaded:
        entries.setdefault(entry.setup, {})[entry.prompt] = entry
    setups: dict[str, dict[str, Any]] = {}
    for s in summaries:
        for k, v in s.get("setups", {}).items():
            setups.setdefault(k, v)  # the first part (main) keeps its lines
    return LabResults(
        folder,
        first["gpu_name"],
        first["model"],
        first["weights_digest"],
        first["prompts"]["digest"],
        setups,
        entries,
        summaries,
    )


def check_same_model(a: LabResults, b: LabResults) -> None:
    if a.weights_digest != b.weights_digest or a.model != b.model:
        raise FpmonError(
            f"{a.folder} holds {a.model} (weights {a.weights_digest[:12]}…) and {b.folder} "
            f"holds {b.model} (weights {b.weights_digest[:12]}…): compare runs of the same "
            "model and weights"
        )
    if a.prompts_digest != b.prompts_digest:
        raise FpmonError(
            f"{a.folder} and {b.folder} ran different prompt sets: run both with the same "
            "--prompts, --prompt-len, --decode-steps and --seed"
        )
