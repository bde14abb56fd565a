"""Batch shapes shared by capture, agent and replay: fillers and left-padded layout."""

from __future__ import annotations

FILLER_BASE = 7


def filler_ids(length: int, row: int, vocab_limit: int) -> list[int]:
    """Deterministic tokens standing in for a co-batched request that is not replayed.

    Rows of a batch are computed independently by the GEMMs and attention, as long as their
    shapes match: so a filler of the same length reproduces the shape, not the content.
    """
    span = max(vocab_limit - FILLER_BASE - 1, 1)
    return [FILLER_BASE + ((row * 131 + i * 17) % span) for i in range(length)]


def build_rows(
    prompt: list[int],
    batch_size: int,
    slot: int,
    vocab_limit: int,
    lengths: list[int] | None = None,
) -> list[list[int]]:
    """The batch a declared (batch_size, slot) implies, fillers around the real prompt."""
    lengths = lengths or [len(prompt)] * batch_size
    rows = [filler_ids(n, r, vocab_limit) for r, n in enumerate(lengths)]
    rows[slot] = list(prompt)
    return rows
