"""Raw probes of a lab run, kept small: exact bytes, deduplicated and compressed.

Every (setup, prompt) gives one `Entry`: the probed keys at every probed layer and position,
the first 256 dimensions of the final hidden state, the top-k logits, and a digest of each full
probe (bit-identity is decided on the digests, distances on the kept bytes). Rows equal to the
same prompt's row in a reference setup are stored as a bit in a mask, and 16-bit words are split
into byte planes before zlib (the high byte, sign and exponent, compresses well; the low byte
does not). Files are cut below 15 MiB each, so they travel back from the device.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from fpmon.errors import FpmonError
from fpmon.records import HIDDEN_PROBE
from fpmon.tensors import Blob

RAW_KIND = "fpmon.lab.raw"
RAW_VERSION = 1
HIDDEN_KEEP = 256  # dims of the final hidden state kept raw (its digest covers all of it)
CHUNK_BYTES = 15 * 1024 * 1024


def digest16(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


@dataclass
class Entry:
    """One prompt under one setup: what the lab keeps of its record."""

    setup: str
    prompt: int
    batch_size: int
    slot: int
    prefill_s: float
    decode_s: float
    probes: dict[str, Blob]  # kept raw (hidden.final cut to HIDDEN_KEEP dims)
    digests: dict[str, bytes]  # of every full probe
    full_hidden: Blob | None = field(default=None, repr=False)  # in memory only, never saved

    @classmethod
    def from_probes(
        cls,
        setup: str,
        prompt: int,
        batch_size: int,
        slot: int,
        prefill_s: float,
        decode_s: float,
        probes: dict[str, Blob],
    ) -> Entry:
        kept = dict(probes)
        hidden = probes.get(HIDDEN_PROBE)
        if hidden is not None and hidden.shape[-1] > HIDDEN_KEEP:
            raw = np.ascontiguousarray(hidden.raw()[..., :HIDDEN_KEEP])
            kept[HIDDEN_PROBE] = Blob(hidden.dtype, raw.shape, raw.tobytes())
        return cls(
            setup,
            prompt,
            batch_size,
            slot,
            prefill_s,
            decode_s,
            kept,
            {k: digest16(b.data) for k, b in probes.items()},
            hidden,
        )

    def identical_to(self, other: Entry) -> bool:
        return self.digests == other.digests


def _planes(raw: np.ndarray) -> bytes:
    """Byte-plane shuffle: all high bytes, then all low bytes (for 16-bit words)."""
    b = raw.view(np.uint8).reshape(-1, raw.dtype.itemsize)
    return b.T.copy().tobytes()


def _unplanes(data: bytes, itemsize: int) -> bytes:
    b = np.frombuffer(data, dtype=np.uint8).reshape(itemsize, -1)
    return b.T.copy().tobytes()


def _pack_blob(blob: Blob, ref: Blob | None) -> dict[str, Any]:
    raw = blob.raw()
    rows = raw.reshape(raw.shape[0], -1) if raw.ndim > 1 else raw.reshape(-1, 1)
    same = np.zeros(rows.shape[0], dtype=bool)
    if ref is not None and ref.dtype == blob.dtype and ref.shape == blob.shape:
        rr = ref.raw().reshape(rows.shape)
        same = np.all(rows == rr, axis=1)
    keep = np.ascontiguousarray(rows[~same])
    return {
        "dtype": blob.dtype,
        "shape": list(blob.shape),
        "same": np.packbits(same).tobytes() if same.any() else b"",
        "data": zlib.compress(_planes(keep), 6) if keep.size else b"",
    }


def _unpack_blob(m: dict[str, Any], ref: Blob | None, where: str) -> Blob:
    shape = tuple(int(x) for x in m["shape"])
    proto = Blob(m["dtype"], shape, bytes(int(np.prod(shape)) * _itemsize(m["dtype"])))
    rows_shape = (shape[0], -1) if len(shape) > 1 else (-1, 1)
    out = proto.raw().copy().reshape(rows_shape)
    same = np.zeros(out.shape[0], dtype=bool)
    if m["same"]:
        same = np.unpackbits(np.frombuffer(m["same"], dtype=np.uint8))[: out.shape[0]].astype(bool)
        if ref is None:
            raise FpmonError(f"{where}: rows refer to a reference entry that is missing")
        out[same] = ref.raw().reshape(out.shape)[same]
    if m["data"]:
        words = np.frombuffer(
            _unplanes(zlib.decompress(m["data"]), out.dtype.itemsize), dtype=out.dtype
        )
        out[~same] = words.reshape(-1, out.shape[1])
    return Blob(m["dtype"], shape, out.reshape(shape).tobytes())


def _itemsize(dtype: str) -> int:
    return Blob(dtype, (0,), b"").raw().dtype.itemsize


def pack_entry(e: Entry, ref: Entry | None, keep_raw: bool = True) -> bytes:
    """One entry's bytes in a raw file; rows equal to `ref`'s (same prompt) become mask bits.
    Without `keep_raw` only the digests are kept (enough to decide bit-identity)."""
    m = {
        "setup": e.setup,
        "prompt": e.prompt,
        "batch_size": e.batch_size,
        "slot": e.slot,
        "prefill_s": e.prefill_s,
        "decode_s": e.decode_s,
        "ref": ref.setup if ref is not None else "",
        "digests": e.digests,
        "probes": {
            k: _pack_blob(b, ref.probes.get(k) if ref else None) for k, b in e.probes.items()
        }
        if keep_raw
        else {},
    }
    return msgpack.packb(m, use_bin_type=True)


def write_raw(folder: Path, part: str, packed: list[bytes], meta: dict[str, Any]) -> list[Path]:
    """Write `raw-<part>-NN.bin` files of packed entries, replacing this part's older ones."""
    chunks: list[list[bytes]] = [[]]
    size = 0
    for b in packed:
        if size + len(b) > CHUNK_BYTES and chunks[-1]:
            chunks.append([])
            size = 0
        chunks[-1].append(b)
        size += len(b)
    paths = []
    for i, chunk in enumerate(chunks):
        path = folder / f"raw-{part}-{i:02d}.bin"
        head = msgpack.packb(
            {"kind": RAW_KIND, "v": RAW_VERSION, "meta": meta, "n": len(chunk)},
            use_bin_type=True,
        )
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(head + b"".join(chunk))
        tmp.replace(path)
        paths.append(path)
    for old in folder.glob(f"raw-{part}-*.bin"):
        if old not in paths:
            old.unlink()
    return paths


def save_entries(
    folder: Path, part: str, entries: list[Entry], refs: dict[str, str], meta: dict[str, Any]
) -> list[Path]:
    """Pack and write entries; `refs`: setup -> the setup it is deduplicated against."""
    index = {(e.setup, e.prompt): e for e in entries}
    packed = [pack_entry(e, index.get((refs.get(e.setup, ""), e.prompt))) for e in entries]
    return write_raw(folder, part, packed, meta)


def _read_file(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=1 << 30)
    unpacker.feed(path.read_bytes())
    try:
        head = next(unpacker)
    except StopIteration:
        raise FpmonError(f"{path}: empty raw file; run `fpmon lab run` again") from None
    if not isinstance(head, dict) or head.get("kind") != RAW_KIND:
        raise FpmonError(f"{path}: not a raw file of `fpmon lab run`")
    if head.get("v") != RAW_VERSION:
        raise FpmonError(
            f"{path}: raw schema v{head.get('v')} is not supported (this fpmon reads "
            f"v{RAW_VERSION}); run `fpmon lab run` again with this version"
        )
    return head, list(unpacker)


def load_entries(paths: Iterable[Path]) -> tuple[list[Entry], list[dict[str, Any]]]:
    """All entries of these raw files, with references resolved; plus each file's meta."""
    metas: list[dict[str, Any]] = []
    rows: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(paths):
        head, items = _read_file(path)
        metas.append(head["meta"])
        rows.extend((path, m) for m in items)
    by_key = {(m["setup"], m["prompt"]): m for _p, m in rows}
    cache: dict[tuple[str, int], dict[str, Blob]] = {}

    def probes_of(path: Path, m: dict[str, Any]) -> dict[str, Blob]:
        key = (m["setup"], m["prompt"])
        if key in cache:
            return cache[key]
        ref = None
        if m["ref"]:
            rm = by_key.get((m["ref"], m["prompt"]))
            if rm is None:
                raise FpmonError(
                    f"{path}: entry {key} refers to setup {m['ref']!r}, whose raw file is "
                    "missing: copy all raw-*.bin files of the run together"
                )
            ref = probes_of(path, rm)
        out = {
            k: _unpack_blob(v, ref.get(k) if ref else None, str(path))
            for k, v in m["probes"].items()
        }
        cache[key] = out
        return out

    entries = [
        Entry(
            m["setup"],
            int(m["prompt"]),
            int(m["batch_size"]),
            int(m["slot"]),
            float(m["prefill_s"]),
            float(m["decode_s"]),
            probes_of(path, m),
            {k: bytes(v) for k, v in m["digests"].items()},
        )
        for path, m in rows
    ]
    return entries, metas
