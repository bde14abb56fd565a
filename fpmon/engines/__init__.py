"""Engines: one small interface (`base.Engine`), a Hugging Face and a vLLM implementation."""

from fpmon.engines.base import BatchRequest, BatchResult, Engine, ProbeSpec, RowResult

__all__ = ["BatchRequest", "BatchResult", "Engine", "ProbeSpec", "RowResult"]
