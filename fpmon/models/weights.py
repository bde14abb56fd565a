"""Seeded weights and weight digests: the same bytes on every machine, proven by digest."""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable, Iterable

import torch

from fpmon.progress import Progress


def seeded_init_(model: torch.nn.Module, seed: int, progress: Progress | None = None) -> str:
    """Fill every parameter from a generator keyed by (seed, parameter name).

    Keyed per name (not one global stream) so the bytes do not depend on module creation
    order or on transformers' own init code, which changes between versions. Generated on the
    CPU in float32: CUDA generators' output depends on launch geometry, CPU's does not.
    Returns the digest of the float32 weights (as `digest_tensors` computes it).
    """
    params = list(model.named_parameters())
    filled = []
    for i, (name, p) in enumerate(params):
        g = torch.Generator(device="cpu")
        g.manual_seed((seed * 1_000_003 + zlib.crc32(name.encode())) & 0x7FFF_FFFF_FFFF)
        if name.endswith("norm.weight"):
            value = torch.ones(p.shape, dtype=torch.float32)
        else:
            value = torch.randn(p.shape, generator=g, dtype=torch.float32).mul_(0.02)
        with torch.no_grad():
            p.copy_(value)
        filled.append((name, value))
        if progress:
            progress.update(i + 1, len(params), "seeding weights")
    return digest_tensors(filled)


def digest_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over (name, dtype, shape, bytes) in name order."""
    h = hashlib.sha256()
    for name, t in sorted(named, key=lambda x: x[0]):
        t = t.detach().to("cpu").contiguous()
        h.update(name.encode() + b"\0" + str(t.dtype).encode() + b"\0")
        h.update(repr(tuple(t.shape)).encode() + b"\0")
        raw = t.view(torch.int16) if t.dtype == torch.bfloat16 else t
        h.update(raw.numpy().data.cast("B"))
    return h.hexdigest()


def digest_files(paths: Iterable, on_chunk: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda x: x.name):
        h.update(p.name.encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 24):
                h.update(chunk)
                if on_chunk:
                    on_chunk(len(chunk))
    return h.hexdigest()
