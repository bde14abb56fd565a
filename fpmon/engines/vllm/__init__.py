"""vLLM engine (issue 7). Importing this package does not import vLLM: the engine does, at
construction, so a missing vLLM is a clear error naming the extra to install."""

from __future__ import annotations

from typing import Any

__all__ = ["VLLMEngine"]


def __getattr__(name: str) -> Any:
    if name == "VLLMEngine":
        from fpmon.engines.vllm.engine import VLLMEngine

        return VLLMEngine
    raise AttributeError(name)
