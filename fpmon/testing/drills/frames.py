"""Frames for the socket fuzz: valid frames of every wire message, their mutations, and
hand-crafted hostile values. Seeded: the same seed gives the same frames.

    corpus = valid_corpus(["drill-0", "fuzz-node"])     # topic -> [[topic, payload], ...]
    m = Mutator(random.Random(1), corpus, weights={"submit": 5})
    frames = m.next()                                   # a list of 1..60 frames
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Sequence
from typing import Any

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from fpmon.chain import GENESIS, next_chain, sign_head
from fpmon.setups import Setup
from fpmon.wire import (
    MESSAGE_TYPES,
    Alert,
    Candidate,
    Commit,
    Evidence,
    GpuSample,
    Head,
    HostSample,
    Link,
    LinksReply,
    LinksRequest,
    NodeSummary,
    OpenReply,
    OpenRequest,
    ProbeEvidence,
    StateReply,
    StateRequest,
    SubmitReply,
    SubmitRequest,
    Telemetry,
    Verdict,
    encode,
)

HUGE = 5 << 20  # 5 MiB: beyond every payload limit (1 MiB agent, 4 MiB daemon)
I64 = 2**63


def valid_messages(nodes: Sequence[str]) -> list[Any]:
    """At least one valid message of every type in `MESSAGE_TYPES`, per node name."""
    key = Ed25519PrivateKey.generate()
    pub = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    setup = Setup(dtype="bfloat16", torch_version="2.13.0", engine_version="5.0").to_map()
    now = time.time()
    out: list[Any] = []
    for node in nodes:
        chain = GENESIS
        for seq in range(3):
            digest = bytes(random.Random(seq).randbytes(32))
            chain = next_chain(chain, digest)
            c = Commit(
                node=node,
                t=now,
                seq=seq,
                request_id=f"{node}-{seq}",
                record_digest=digest,
                chain=chain,
                setup=setup,
                model="tiny",
                prompt_tokens=5,
                output_tokens=6,
                prefill_s=0.01,
                decode_s=0.05,
            )
            h = Head(
                node=node,
                t=now,
                seq=seq,
                chain=chain,
                sig=sign_head(key, node, seq, chain),
                pubkey=pub,
                final=seq == 2,
            )
            out += [c, h]
        out.append(
            Telemetry(
                node=node,
                t=now,
                gpus=[
                    GpuSample(
                        index=0,
                        uuid="GPU-0",
                        name="NVIDIA H200",
                        util=50.0,
                        mem_used=1e9,
                        mem_total=1.4e11,
                        power_w=300.0,
                        procs=1,
                        errors={"temp_c": "not supported"},
                    )
                ],
                host=HostSample(cpus=2, cpu_util=12.5, mem_total=2e10, mem_used=1e9, load1=0.4),
                source="nvml",
            )
        )
        evidence = Evidence(
            mode="exact",
            pair="cpu|cpu",
            score=0.01,
            first_diff="keys.1",
            notes=["n"],
            probes=[
                ProbeEvidence(
                    probe="keys", layer=1, rel=0.1, n_diff=3, n=10, per_position_rel=[0.0, 0.2]
                )
            ],
            commit_t=now,
        )
        out.append(
            Verdict(
                node=node,
                t=now,
                seq=1,
                status="mismatch",
                request_id="r",
                evidence=evidence,
                attribution=[Candidate(field="dtype", changes={"dtype": "float32"}, exact=True)],
                declared=setup,
                replay_s=0.2,
                reference="cpu",
                reason="differs",
            )
        )
        out.append(
            Alert(
                node=node,
                t=now,
                id=f"mismatch:{node}:1",
                kind="mismatch",
                severity="critical",
                message="m",
                seq=1,
                details={"attribution": "dtype", "n": [1, 2]},
            )
        )
        out.append(OpenRequest(node="replay", t=now, seq=1, nonce=b"n" * 16))
        out.append(
            OpenReply(node=node, t=now, seq=1, nonce=b"n" * 16, status="ok", record=b"r" * 3000)
        )
        out.append(
            SubmitRequest(
                node="client", t=now, request_id=f"fz-{node}", prompt="Hello", max_tokens=2
            )
        )
        out.append(
            SubmitReply(
                node=node,
                t=now,
                request_id="r",
                status="ok",
                completion="c",
                output_ids=[1, 2],
                seq=4,
            )
        )
        out.append(StateRequest(node="monitor", t=now, since_verdicts=0))
        out.append(
            StateReply(
                node="replay",
                t=now,
                nodes={node: NodeSummary(commits=3, verdicts={"match": 2}, rejects={"x": 1})},
                verdicts=[out[-7]],
                alerts=[out[-6]],
                stream_seq=9,
            )
        )
        out += _links(node, key, pub, setup, now)
    return out


def _links(node: str, key: Any, pub: bytes, setup: dict[str, Any], now: float) -> list[Any]:
    """LinksRequest / LinksReply (gap repair)."""
    chain, links = GENESIS, []
    for seq in range(2):
        d = bytes(16) + seq.to_bytes(16, "big")
        chain = next_chain(chain, d)
        links.append(Link(seq=seq, record_digest=d, chain=chain))
    head = Head(
        node=node, t=now, seq=1, chain=chain, sig=sign_head(key, node, 1, chain), pubkey=pub
    )
    return [
        LinksRequest(node="replay", t=now, first=0, count=2, nonce=b"l" * 16),
        LinksReply(
            node=node,
            t=now,
            nonce=b"l" * 16,
            first=0,
            status="ok",
            links=links,
            head=head,
            log_head=1,
        ),
    ]


def valid_corpus(nodes: Sequence[str]) -> dict[str, list[list[bytes]]]:
    out: dict[str, list[list[bytes]]] = {}
    for m in valid_messages(nodes):
        out.setdefault(m.TOPIC, []).append(encode(m))
    missing = set(MESSAGE_TYPES) - set(out)
    if missing:  # a new message type: give it a sample above, so the fuzz covers it
        raise AssertionError(f"no valid sample for message types {sorted(missing)}")
    return out


# --- hostile values -------------------------------------------------------------------------
def _deep(depth: int) -> bytes:
    """A msgpack value nested `depth` arrays deep (packb refuses to build one)."""
    return b"\x91" * depth + b"\xc0"


HOSTILE_VALUES: list[Any] = [
    -1,
    -(2**63),
    I64 - 1,
    I64,
    2**64 - 1,
    0,
    math.nan,
    math.inf,
    -math.inf,
    -0.0,
    1e308,
    "",
    "x" * 5000,
    "\x00",
    "é" * 3000,
    b"",
    b"\xff" * 64,
    b"x" * 100_000,
    {b"k": 1},
    {1: 2},
    {None: 1},
    {"": {"": {"": {"": {"": [1]}}}}},
    None,
    True,
    [],
    {},
    [[[[[[[[[[1]]]]]]]]]],
    [0] * 100_000,
    {f"k{i}": i for i in range(5000)},
    msgpack.ExtType(5, b"x"),
    msgpack.Timestamp(0, 0),
    msgpack.ExtType(127, b"y" * 1000),
    3.5,
    "seq",
]


def _packed(m: Any) -> bytes | None:
    try:
        return msgpack.packb(m, use_bin_type=True, strict_types=False)
    except (ValueError, OverflowError, TypeError):
        return None


def _mutate_map(rng: random.Random, m: Any) -> Any:
    """One structural change: a field (maybe nested) set to a hostile value, removed,
    renamed, duplicated under a bytes key, or the whole map replaced."""
    if not isinstance(m, dict) or not m or rng.random() < 0.05:
        return rng.choice(HOSTILE_VALUES)
    m = dict(m)
    k = rng.choice(list(m))
    op = rng.random()
    if op < 0.55:
        inner = m[k]
        if isinstance(inner, dict) and inner and rng.random() < 0.5:
            m[k] = _mutate_map(rng, inner)
        elif isinstance(inner, list) and inner and rng.random() < 0.5:
            inner = list(inner)
            i = rng.randrange(len(inner))
            inner[i] = (
                _mutate_map(rng, inner[i])
                if isinstance(inner[i], dict)
                else rng.choice(HOSTILE_VALUES)
            )
            m[k] = inner
        else:
            m[k] = rng.choice(HOSTILE_VALUES)
    elif op < 0.7:
        del m[k]
    elif op < 0.8:
        m[f"unknown_{rng.randrange(100)}"] = rng.choice(HOSTILE_VALUES)
    elif op < 0.9:
        m[k.encode() if isinstance(k, str) else k] = m.pop(k)  # bytes key
    else:
        m[rng.randrange(-5, 5)] = m.pop(k)  # integer key
    return m


def crafted(corpus: dict[str, list[list[bytes]]]) -> list[list[bytes]]:
    """Hand-written hostile frames for every topic: out-of-range integers, bytes keys, NaN,
    nesting 100k deep, lying length headers, duplicate keys, bad versions, huge payloads."""
    out: list[list[bytes]] = []
    for topic, frames in corpus.items():
        t = topic.encode()
        base = msgpack.unpackb(frames[0][1], raw=False, strict_map_key=False)
        ints = [
            k
            for k in (
                "seq",
                "first",
                "count",
                "since_verdicts",
                "max_tokens",
                "log_head",
                "stream_seq",
                "prompt_tokens",
            )
            if k in base
        ]
        for k in ints or ["seq"]:
            for v in (-1, I64 - 1, I64, 2**64 - 1, -(2**63), 1 << 62):
                out.append([t, _packed({**base, k: v}) or b""])
        for k in ("t", "prefill_s", "replay_s"):
            for x in (math.nan, -1.0, math.inf, 1e300):
                out.append([t, _packed({**base, k: x}) or b""])
        out.append([t, _packed({k.encode(): v for k, v in base.items()}) or b""])
        out.append([t, _packed({**base, "v": 2}) or b""])
        out.append([t, _packed({**base, "v": "1"}) or b""])
        out.append([t, _packed({**base, "node": ""}) or b""])
        out.append([t, _packed({**base, "node": "n" * 10_000}) or b""])
        out.append([t, _packed({**base, "node": b"bytes-name"}) or b""])
        out.append([t, _packed({**base, "evil": {b"k": [math.nan]}}) or b""])
        raw = frames[0][1]
        out.append([t, raw[:1] + b"\xa3seq\xcf\xff\xff\xff\xff\xff\xff\xff\xff" + raw[1:]])
        out.append([t, b"\x81\xa3seq" + _deep(100_000)])  # nesting 100k deep
        out.append([t, _deep(100_000)])
        out.append([t, b"\xdf\xff\xff\xff\xff\xa1v\x01"])  # map32: 4 billion entries, 1 given
        out.append([t, b"\xdd\xff\xff\xff\xff\xc0"])  # array32: 4 billion items
        out.append([t, b"\x81\xa4node\xdb\xff\xff\xff\xffabc"])  # str32: 4 GiB, 3 given
        out.append([t, b"\x81\xa3sig\xc6\xff\xff\xff\xffabc"])  # bin32: 4 GiB, 3 given
        out.append([t, b"\xdd\x00\x10\x00\x00" + b"\xc0" * (1 << 20)])  # 1M nils
        out.append([t, b"\xde\x00\x02\xa3seq\x01\xa3seq\xcf" + b"\xff" * 8])  # duplicate key
        out.append([t, b"\xc1"])  # the never-used byte
        out.append([t, b"\xd6\xff\x00\x00\x00\x00"])  # a timestamp ext as the payload
        out.append([t, b"\xcb" + b"\x7f\xf8" + b"\x00" * 6])  # a bare NaN
    return out


def huge_frames(rng: random.Random, corpus: dict[str, list[list[bytes]]]) -> list[list[bytes]]:
    """5 MiB frames: random bytes, a valid-looking map with a 5 MiB string, a 5 MiB topic."""
    topic, frames = rng.choice(list(corpus.items()))
    base = msgpack.unpackb(frames[0][1], raw=False, strict_map_key=False)
    blob = rng.randbytes(HUGE)
    return [
        [topic.encode(), blob],
        [topic.encode(), _packed({**base, "request_id": "x" * HUGE}) or b""],
        [blob[:HUGE], frames[0][1]],
        [topic.encode(), b"\xdd" + (HUGE // 1).to_bytes(4, "big") + b"\xc0" * HUGE],
    ]


# --- the mutator ----------------------------------------------------------------------------
OPS: dict[str, float] = {  # relative weights
    "valid": 3,
    "bitflip": 20,
    "byteset": 8,
    "truncate": 10,
    "extend": 5,
    "splice": 8,
    "chunk": 5,
    "topic": 8,
    "frames": 8,
    "empty": 3,
    "struct": 15,
    "hostile": 5,
    "random": 2,
}
MAGIC = bytes(
    [
        0x00,
        0xFF,
        0xC0,
        0xC1,
        0xC2,
        0xC3,
        0xC7,
        0xCB,
        0xCF,
        0xD3,
        0xD9,
        0xDB,
        0xDC,
        0xDD,
        0xDE,
        0xDF,
        0x7F,
        0x80,
        0x90,
        0xA0,
    ]
)


class Mutator:
    """Seeded frame source. `weights` favours some topics as bases (e.g. `submit` for an
    agent's intake); `huge_every` mixes in a 5 MiB frame every that many frames."""

    def __init__(
        self,
        rng: random.Random,
        corpus: dict[str, list[list[bytes]]],
        weights: dict[str, float] | None = None,
        huge_every: int = 20_000,
        pool: int = 4000,
        ops: dict[str, float] | None = None,
    ) -> None:
        self.rng = rng
        self.corpus = corpus
        self.topics = [t.encode() for t in corpus] + [
            b"",
            b"commitx",
            b"comm",
            b"COMMIT",
            b"state",
            b"\x00",
            b"\xff" * 40,
            b"links?x",
        ]
        w = weights or {}
        self.bases = [f for t, fs in corpus.items() for f in fs]
        self.base_w = [w.get(t, 1.0) for t, fs in corpus.items() for _ in fs]
        ops = ops or OPS
        self.ops, self.op_w = list(ops), list(ops.values())
        self.huge_every = huge_every
        self.hostile = crafted(corpus)
        self.structs = self._structs(pool)
        self.huge: list[list[bytes]] = []
        self.count = 0
        self.by_op: dict[str, int] = dict.fromkeys(self.ops, 0)
        self.by_op["huge"] = 0

    def _structs(self, n: int) -> list[list[bytes]]:
        out: list[list[bytes]] = []
        maps = [(f[0], msgpack.unpackb(f[1], raw=False, strict_map_key=False)) for f in self.bases]
        while len(out) < n:
            topic, m = self.rng.choices(maps, self.base_w)[0]
            packed = _packed(_mutate_map(self.rng, m))
            if packed is not None:
                out.append([topic, packed])
        return out

    def base(self) -> list[bytes]:
        return self.rng.choices(self.bases, self.base_w)[0]

    def next(self) -> list[bytes]:
        """Every hand-crafted hostile frame once first, then seeded random choices; a 5 MiB
        frame at the 100th and 1000th and then every `huge_every`th."""
        self.count += 1
        if self.count <= len(self.hostile):
            self.by_op["hostile"] += 1
            return self.hostile[self.count - 1]
        if self.huge_every and (self.count in (100, 1000) or self.count % self.huge_every == 0):
            if not self.huge:
                self.huge = huge_frames(self.rng, self.corpus)
            self.by_op["huge"] += 1
            self._huge_i = getattr(self, "_huge_i", -1) + 1
            return self.huge[self._huge_i % len(self.huge)]
        op = self.rng.choices(self.ops, self.op_w)[0]
        self.by_op[op] += 1
        return getattr(self, "_" + op)()

    # Each op returns a fresh list of frames (never empty: ZeroMQ cannot send 0 frames).
    def _valid(self) -> list[bytes]:
        return list(self.base())

    def _bitflip(self) -> list[bytes]:
        t, p = self.base()
        b = bytearray(p)
        for _ in range(self.rng.randint(1, 8)):
            i = self.rng.randrange(len(b))
            b[i] ^= 1 << self.rng.randrange(8)
        return [t, bytes(b)]

    def _byteset(self) -> list[bytes]:
        t, p = self.base()
        b = bytearray(p)
        for _ in range(self.rng.randint(1, 4)):
            b[self.rng.randrange(len(b))] = self.rng.choice(MAGIC)
        return [t, bytes(b)]

    def _truncate(self) -> list[bytes]:
        t, p = self.base()
        return [t, p[: self.rng.randrange(len(p))]]

    def _extend(self) -> list[bytes]:
        t, p = self.base()
        return [t, p + self.rng.randbytes(self.rng.choice((1, 8, 100, 5000)))]

    def _splice(self) -> list[bytes]:
        t, p = self.base()
        _, q = self.base()
        return [t, p[: self.rng.randrange(len(p) + 1)] + q[self.rng.randrange(len(q) + 1) :]]

    def _chunk(self) -> list[bytes]:
        t, p = self.base()
        i = self.rng.randrange(len(p))
        j = min(len(p), i + self.rng.randint(1, 64))
        if self.rng.random() < 0.5:
            return [t, p[:i] + p[i:j] * self.rng.randint(2, 50) + p[j:]]  # repeated
        return [t, p[:i] + p[j:]]  # cut out

    def _topic(self) -> list[bytes]:
        _, p = self.base()
        return [self.rng.choice(self.topics), p]

    def _frames(self) -> list[bytes]:
        t, p = self.base()
        r = self.rng.random()
        if r < 0.2:
            return [p]
        if r < 0.3:
            return [t]
        if r < 0.5:
            return [b"", t, p]  # a REQ-style delimiter in front
        if r < 0.7:
            return [
                t,
                p,
                *(
                    self.rng.randbytes(self.rng.randrange(20))
                    for _ in range(self.rng.randint(1, 5))
                ),
            ]
        if r < 0.85:
            return [t, p] * self.rng.randint(2, 30)
        return [b""] * self.rng.randint(3, 60)

    def _empty(self) -> list[bytes]:
        return self.rng.choice(([b""], [b"", b""], [self.base()[0], b""], [b"", self.base()[1]]))

    def _struct(self) -> list[bytes]:
        return self.rng.choice(self.structs)

    def _hostile(self) -> list[bytes]:
        return self.rng.choice(self.hostile)

    def _random(self) -> list[bytes]:
        return [
            self.rng.randbytes(self.rng.randrange(1, 200)) for _ in range(self.rng.randint(1, 3))
        ]
