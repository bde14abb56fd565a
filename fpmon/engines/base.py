"""The engine interface both sides of the protocol run: prover (agent) and verifier (replay)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from fpmon.setups import Setup
from fpmon.tensors import Blob

DEFAULT_TOPK = 8


def default_layers(num_layers: int) -> list[int]:
    """A spread of layers: the first (sees only the embedding and RoPE), quarters, the last."""
    picks = {0, num_layers // 4, num_layers // 2, (3 * num_layers) // 4, num_layers - 1}
    return sorted(p for p in picks if 0 <= p < num_layers)


@dataclass(frozen=True)
class ProbeSpec:
    """What to extract. Nothing outside it is copied off the device."""

    layers: tuple[int, ...]
    topk: int = DEFAULT_TOPK
    keys: bool = True
    hidden: bool = True
    logits: bool = True

    def to_map(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "topk": self.topk,
            "keys": self.keys,
            "hidden": self.hidden,
            "logits": self.logits,
        }

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> ProbeSpec:
        return cls(
            tuple(int(x) for x in m["layers"]),
            int(m.get("topk", DEFAULT_TOPK)),
            bool(m.get("keys", True)),
            bool(m.get("hidden", True)),
            bool(m.get("logits", True)),
        )


@dataclass
class BatchRequest:
    """One static batch: prompts by row, how many decode steps, optional teacher forcing.

    `forced[r]`, when given, is the full output of row r (decode_steps + 1 tokens): step s
    feeds forced[r][s-1] instead of the greedy choice, so replay sees the same tokens.
    """

    rows: list[list[int]]
    decode_steps: int
    probe_rows: list[int]
    probes: ProbeSpec | None
    forced: list[list[int] | None] | None = None
    # time.monotonic() past which the run stops between decode steps (OverBudget): a
    # verifier's replay of a record the node shaped must not run for as long as it likes.
    deadline: float | None = None


@dataclass
class RowResult:
    output_ids: list[int]
    probes: dict[str, Blob] = field(default_factory=dict)


@dataclass
class BatchResult:
    rows: dict[int, RowResult]  # by row index, for the probed rows
    schedule: dict[str, Any]
    prefill_s: float
    decode_s: float
    all_outputs: list[list[int]] = field(default_factory=list)


class Engine(Protocol):
    """A loaded model under one setup. `setup` is what actually runs (batch fields per batch)."""

    setup: Setup
    model_name: str
    weights_digest: str
    num_layers: int
    max_positions: int
    vocab_limit: int  # the tokenizer's size: filler tokens are drawn below it

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def run_batch(self, req: BatchRequest) -> BatchResult: ...
