"""Raw probe files: exact round trip, deduplication against a reference, chunking, errors."""

from __future__ import annotations

import numpy as np
import pytest

from fpmon.errors import FpmonError
from fpmon.lab import store
from fpmon.lab.store import Entry, load_entries, pack_entry, save_entries, write_raw
from fpmon.tensors import Blob


def blob(arr: np.ndarray, dtype: str = "bfloat16") -> Blob:
    words = arr.astype(np.uint16) if dtype == "bfloat16" else arr
    return Blob(dtype, tuple(words.shape), np.ascontiguousarray(words).tobytes())


def entry(setup: str, prompt: int, keys: np.ndarray, hidden: np.ndarray) -> Entry:
    return Entry.from_probes(
        setup, prompt, 1, 0, 0.01, 0.1, {"keys.L0": blob(keys), "hidden.final": blob(hidden)}
    )


def test_round_trip_with_dedup_and_hidden_cut(tmp_path):
    rng = np.random.default_rng(0)
    keys = rng.integers(0, 65535, size=(5, 16))
    hidden = rng.integers(0, 65535, size=(5, 300))
    base = entry("base", 0, keys, hidden)
    moved = keys.copy()
    moved[3] += 1  # one decode position differs
    other = entry("bs2", 0, moved, hidden)
    save_entries(tmp_path, "main", [base, other], {"bs2": "base"}, {"m": 1})
    back, metas = load_entries(tmp_path.glob("raw-*.bin"))
    got = {e.setup: e for e in back}
    assert metas == [{"m": 1}]
    assert got["bs2"].probes["keys.L0"].data == blob(moved).data
    assert got["base"].probes["keys.L0"].data == blob(keys).data
    # hidden kept to its first 256 dims, digest of all 300
    assert got["base"].probes["hidden.final"].shape == (5, 256)
    assert got["base"].digests == base.digests
    assert not got["bs2"].identical_to(got["base"])


def test_dedup_makes_identical_entries_small():
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 65535, size=(17, 256))
    hidden = rng.integers(0, 65535, size=(17, 256))
    a, b = entry("base", 0, keys, hidden), entry("base.r2", 0, keys, hidden)
    assert len(pack_entry(b, a)) < len(pack_entry(b, None)) / 20


def test_digest_only_entries(tmp_path):
    rng = np.random.default_rng(2)
    e = entry("load.c-heavy.r2", 0, rng.integers(0, 9, (3, 4)), rng.integers(0, 9, (3, 4)))
    write_raw(tmp_path, "s", [pack_entry(e, None, keep_raw=False)], {})
    (back,), _ = load_entries(tmp_path.glob("raw-*.bin"))
    assert back.probes == {} and back.digests == e.digests


def test_chunks_stay_under_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(store, "CHUNK_BYTES", 4000)
    rng = np.random.default_rng(3)
    es = [
        entry("base", i, rng.integers(0, 65535, (4, 64)), rng.integers(0, 9, (4, 8)))
        for i in range(6)
    ]
    paths = save_entries(tmp_path, "main", es, {}, {})
    assert len(paths) > 1
    back, _ = load_entries(paths)
    assert sorted(e.prompt for e in back) == list(range(6))
    # a rewrite with fewer entries removes stale chunks
    assert len(save_entries(tmp_path, "main", es[:1], {}, {})) == 1
    assert len(list(tmp_path.glob("raw-main-*.bin"))) == 1


def test_missing_reference_and_foreign_file(tmp_path):
    rng = np.random.default_rng(4)
    k = rng.integers(0, 65535, (3, 8))
    a, b = entry("base", 0, k, k), entry("bs2", 0, k, k)
    write_raw(tmp_path, "x", [pack_entry(b, a)], {})
    with pytest.raises(FpmonError, match="missing"):
        load_entries(tmp_path.glob("raw-*.bin"))
    bad = tmp_path / "raw-y-00.bin"
    bad.write_bytes(b"\x81\xa1a\x01")
    with pytest.raises(FpmonError, match="not a raw file"):
        load_entries([bad])
