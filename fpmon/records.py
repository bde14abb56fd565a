"""Records (one per served request) and their canonical, versioned encoding and digest.

A record is what the node commits to and reveals only when opened. Fingerprint files
(`.fp`) are the same encoding, so `fpmon capture` output and an agent's log are one format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack

from fpmon import canonical
from fpmon import manifest as mf
from fpmon.errors import FingerprintFileError
from fpmon.setups import Setup
from fpmon.tensors import Blob
from fpmon.wire.messages import ClientRequest, ManifestRow

RECORD_VERSION = 1
FP_KIND = "fpmon.fingerprint"
FP_VERSION = 1


def key_probe(layer: int) -> str:
    return f"keys.L{layer}"


HIDDEN_PROBE = "hidden.final"
TOPK_VALUES = "logits.topk.values"
TOPK_IDS = "logits.topk.ids"


@dataclass(frozen=True)
class Record:
    """Everything needed to replay one request and check its activations.

    Probe tensors have one row per probed position: the last prompt token, then each decode
    step (keys: [positions, kv_heads*head_dim]; hidden: [positions, hidden]; top-k: [positions, k]).

    `manifest` lists every row of the batch (request id and client-request digest, empty for a
    row no client asked for) and `request` is this row's client request (fpmon/manifest.py).
    Both are None for records made without a client (`fpmon capture`, the lab) and are then
    left out of the encoding, so those records keep the bytes and digests they always had.
    """

    node: str
    seq: int
    request_id: str
    t_start: float
    t_end: float
    model: str
    weights_digest: str
    setup: Setup
    prompt_ids: list[int]
    output_ids: list[int]
    schedule: dict[str, Any]
    probes: dict[str, Blob]
    layers: list[int]
    timings: dict[str, float] = field(default_factory=dict)
    manifest: tuple[ManifestRow, ...] | None = None
    request: ClientRequest | None = None
    v: int = RECORD_VERSION

    def to_map(self) -> dict[str, Any]:
        m: dict[str, Any] = {
            "v": self.v,
            "node": self.node,
            "seq": self.seq,
            "request_id": self.request_id,
            "t_start": float(self.t_start),
            "t_end": float(self.t_end),
            "model": self.model,
            "weights_digest": self.weights_digest,
            "setup": self.setup.to_map(),
            "prompt_ids": list(self.prompt_ids),
            "output_ids": list(self.output_ids),
            "schedule": self.schedule,
            "probes": {k: b.to_map() for k, b in self.probes.items()},
            "layers": list(self.layers),
            "timings": {k: float(v) for k, v in self.timings.items()},
        }
        if self.manifest is not None:
            m["manifest"] = mf.to_maps(self.manifest)
        if self.request is not None:
            m["request"] = mf.request_map(self.request)
        return m

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Record:
        try:
            v = int(m["v"])
            if v != RECORD_VERSION:
                raise ValueError(
                    f"record schema v{v} is not supported (this fpmon reads v{RECORD_VERSION})"
                )
            return cls(
                node=str(m["node"]),
                seq=int(m["seq"]),
                request_id=str(m["request_id"]),
                t_start=float(m["t_start"]),
                t_end=float(m["t_end"]),
                model=str(m["model"]),
                weights_digest=str(m["weights_digest"]),
                setup=Setup.from_map(dict(m["setup"])),
                prompt_ids=[int(x) for x in m["prompt_ids"]],
                output_ids=[int(x) for x in m["output_ids"]],
                schedule=dict(m["schedule"]),
                probes={str(k): Blob.from_map(b) for k, b in dict(m["probes"]).items()},
                layers=[int(x) for x in m["layers"]],
                timings={str(k): float(x) for k, x in dict(m.get("timings", {})).items()},
                manifest=mf.decode_manifest(m["manifest"]) if "manifest" in m else None,
                request=mf.decode_request(m["request"]) if "request" in m else None,
                v=v,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed record: {e}") from e

    def encode(self) -> bytes:
        return canonical.pack(self.to_map())

    def digest(self) -> bytes:
        return canonical.digest(self.encode())

    def probes_digest(self) -> bytes:
        """sha256 of the probe tensors alone (names, dtypes, shapes, bytes): equal for two
        bit-identical captures, unlike `digest`, which also covers the request id and times."""
        return canonical.digest(canonical.pack({k: b.to_map() for k, b in self.probes.items()}))

    @classmethod
    def decode(cls, data: bytes) -> Record:
        try:
            m = msgpack.unpackb(data, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types on garbage
            raise ValueError(f"not a msgpack record: {e}") from e
        if not isinstance(m, dict):
            raise ValueError("not a record: expected a map")
        return cls.from_map(m)

    def with_identity(self, node: str, seq: int, request_id: str) -> Record:
        from dataclasses import replace

        return replace(self, node=node, seq=seq, request_id=request_id)


def save_fingerprint(path: Path, records: list[Record], meta: dict[str, Any] | None = None) -> None:
    data = canonical.pack(
        {
            "kind": FP_KIND,
            "v": FP_VERSION,
            "meta": meta or {},
            "records": [r.to_map() for r in records],
        }
    )
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def load_fingerprint(path: Path) -> tuple[list[Record], dict[str, Any]]:
    if not path.exists():
        raise FingerprintFileError(f"{path}: no such file; make one with `fpmon capture --out`")
    try:
        m = msgpack.unpackb(path.read_bytes(), raw=False, strict_map_key=True)
    except Exception as e:
        raise FingerprintFileError(
            f"{path}: not a fingerprint file (truncated or foreign: {e}); capture it again"
        ) from e
    if not isinstance(m, dict) or m.get("kind") != FP_KIND:
        raise FingerprintFileError(
            f"{path}: not an fpmon fingerprint file; pass a file written by `fpmon capture`"
        )
    if m.get("v") != FP_VERSION:
        raise FingerprintFileError(
            f"{path}: fingerprint schema v{m.get('v')} is not supported (this fpmon reads "
            f"v{FP_VERSION}); capture it again with this version"
        )
    try:
        records = [Record.from_map(r) for r in m["records"]]
    except (KeyError, TypeError, ValueError) as e:
        raise FingerprintFileError(f"{path}: {e}; capture it again") from e
    return records, dict(m.get("meta", {}))
