"""The lab's prompt set: seeded token ids and forced continuations, the same on every GPU.

Decode comparisons are teacher-forced with tokens fixed in advance (not each side's greedy
choice): once greedy tokens diverge, distances measure different text, not rounding. Fixing the
continuation from a seed makes every setup on every GPU compute the very same sequence.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from fpmon.engines.batching import FILLER_BASE
from fpmon.errors import FpmonError


@dataclass(frozen=True)
class PromptSet:
    seed: int
    prompt_len: int
    decode_steps: int
    prompts: list[list[int]]
    forced: list[list[int]]  # decode_steps + 1 tokens per prompt

    def __len__(self) -> int:
        return len(self.prompts)

    def digest(self) -> str:
        blob = json.dumps([self.prompts, self.forced], separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()

    def to_map(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "prompt_len": self.prompt_len,
            "decode_steps": self.decode_steps,
            "n": len(self.prompts),
            "digest": self.digest(),
        }


def make_prompts(
    n: int, prompt_len: int, decode_steps: int, vocab_limit: int, seed: int = 7
) -> PromptSet:
    if n < 1:
        raise FpmonError(f"--prompts must be at least 1, got {n}")
    if prompt_len < 2:
        raise FpmonError(f"--prompt-len must be at least 2 tokens, got {prompt_len}")
    if decode_steps < 1:
        raise FpmonError(f"--decode-steps must be at least 1, got {decode_steps}")
    if vocab_limit <= FILLER_BASE + 1:
        raise FpmonError(f"the tokenizer has only {vocab_limit} tokens: too few for the lab")
    rng = np.random.default_rng(seed)
    ids = rng.integers(FILLER_BASE, vocab_limit, size=(n, prompt_len + decode_steps + 1))
    prompts = [[int(x) for x in row[:prompt_len]] for row in ids]
    forced = [[int(x) for x in row[prompt_len:]] for row in ids]
    return PromptSet(seed, prompt_len, decode_steps, prompts, forced)
