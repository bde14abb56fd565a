"""Every message that crosses a process boundary, as a typed struct defined once.

`docs/PROTOCOL.md` is generated from these; `SCHEMA_VERSION` versions them. The structs are
msgspec `Struct`s: decoding checks every field's type *and bounds* (seq in [0, 2^63), string
keys only, string and list lengths, enumerated statuses and kinds) in one pass in C, so a
frame either becomes a fully typed message or is rejected with a reason. Everything a process
does with a message after `decode` may rely on those bounds: they are checked here, once.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

import msgspec
from msgspec import Meta, Struct, field

SCHEMA_VERSION: Literal[1] = 1

# --- bounded building blocks ---------------------------------------------------------------
# SQLite, struct.pack(">Q") and every counter downstream hold 64-bit signed integers.
INT64_MAX = 2**63 - 1
Seq = Annotated[int, Meta(ge=0, le=INT64_MAX)]
SeqOrNone = Annotated[int, Meta(ge=-1, le=INT64_MAX)]  # -1: "no record" (rejections, alerts)
Int64 = Annotated[int, Meta(ge=-INT64_MAX, le=INT64_MAX)]
Count = Annotated[int, Meta(ge=0, le=INT64_MAX)]
Tokens = Annotated[int, Meta(ge=0, le=1 << 24)]
# Unix seconds up to the year 2286; a NaN or negative time is refused, not sorted.
UnixTime = Annotated[float, Meta(ge=0.0, le=1e10)]
Seconds = Annotated[float, Meta(ge=0.0, le=1e7)]
# Measured figures: a NaN or infinite distance is a finding to show, not a frame to refuse.
Number = float
# Node and client names end up in SQL rows, log lines, signed head messages and table cells.
Name = Annotated[str, Meta(min_length=1, max_length=128)]
Ident = Annotated[str, Meta(max_length=256)]
Key = Annotated[str, Meta(max_length=64)]
Text = Annotated[str, Meta(max_length=4096)]
LongText = Annotated[str, Meta(max_length=1 << 20)]
Hash = Annotated[bytes, Meta(max_length=64)]  # sha256 digests, Ed25519 keys and signatures
Nonce = Annotated[bytes, Meta(max_length=64)]
Blob = Annotated[bytes, Meta(max_length=64 << 20)]
# Telemetry figures, bounded: a negative, NaN, infinite or impossible figure (a utilisation over
# 100%, more memory used than the GPU has) fails `decode` as a counted `schema` reject and never
# reaches the accounting. A figure that was not measured is None, never 0.
Pct = Annotated[float, Meta(ge=0.0, le=100.0)]
ByteCount = Annotated[float, Meta(ge=0.0, le=1e16)]
Watts = Annotated[float, Meta(ge=0.0, le=1e5)]
MHz = Annotated[float, Meta(ge=0.0, le=1e5)]
Celsius = Annotated[float, Meta(ge=-100.0, le=250.0)]
Load = Annotated[float, Meta(ge=0.0, le=1e6)]
Pid = Annotated[int, Meta(ge=0, le=2**32)]
CpuSeconds = Annotated[float, Meta(ge=0.0, le=1e12)]
CpuPct = Annotated[float, Meta(ge=0.0, le=100.0 * 65536)]  # % of one core: 800 = 8 cores busy
Interval = Annotated[float, Meta(gt=0.0, le=3600.0)]
TokenId = Annotated[int, Meta(ge=0, lt=1 << 32)]

# Free-form values (setup extras, alert details, attribution changes): scalars, and lists or
# maps of scalars two levels deep at most. Keys are strings: msgpack lets a peer send bytes or
# integer keys, which crash JSON writers and canonical packing downstream.
Scalar = bool | Int64 | Number | Text | None
Value1 = (
    Scalar
    | Annotated[list[Scalar], Meta(max_length=4096)]
    | Annotated[dict[Key, Scalar], Meta(max_length=256)]
)
Value = (
    Scalar
    | Annotated[list[Value1], Meta(max_length=1024)]
    | Annotated[dict[Key, Value1], Meta(max_length=256)]
)
Map = Annotated[dict[Key, Value], Meta(max_length=256)]

# Verdict statuses (DESIGN.md), plus `unverifiable` for records the verifier cannot replay.
Status = Literal[
    "match",
    "within_noise",
    "mismatch",
    "unopened",
    "bad_opening",
    "chain_break",
    "unverifiable",
    # The opened record's batch ran rows its manifest does not account for with a client
    # request (fillers, invented requests, a manifest contradicting the schedule or the
    # declared batch): hidden work, whatever the numerics say (replay/rows.py).
    "covert_rows",
]
AlertKind = Literal[
    "chain_break",
    "unopened",
    "bad_opening",
    "mismatch",
    "suspected_hidden_work",
    "undeclared_capacity",
    "foreign_process",
    "flood",
    "unverifiable",
    "shed",
    "deaf",
    "spoofed",
    "unsigned",
    "gap_unrepaired",
    "covert_rows",
    "challenge_failed",  # a verifier-timed challenge refused, unanswered, uncommitted, unopened
    "served_mismatch",  # what a node served the verifier's challenge is not what it committed
]
# How a mismatch's attribution ended (replay/attribution.py); "" on every other status.
AttributionStatus = Literal[
    "",
    "exact",  # the first candidate reproduces the record bit for bit
    "nearest",  # every candidate was tried and none reproduces it: the nearest are listed
    "budget",  # stopped at the record's replay budget (max_replay_s) before an exact one
    "cap",  # max_candidates reached before an exact one: the rest were shed, not tried
    "failed",  # no candidate could be replayed (each one's error is listed)
    "no_candidates",  # the configured fields give no candidate setup
    "disabled",  # attribution is off in the verifier's config
    "tokens",  # the declared setup reproduces the computation; the served tokens are the lie
    "not_comparable",  # the replay could not be compared with the record (see `reason`)
]
Severity = Literal["info", "warning", "critical"]
OpenStatus = Literal["ok", "purged", "unknown", "error"]
SubmitStatus = Literal["ok", "rejected", "error"]
TelemetrySource = Literal["nvml", "host"]

STATUSES: tuple[str, ...] = get_args(Status)
ATTRIBUTION_STATUSES: tuple[str, ...] = get_args(AttributionStatus)
ALERT_KINDS: tuple[str, ...] = get_args(AlertKind)


class SchemaError(ValueError):
    pass


class Message(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    TOPIC: ClassVar[str] = ""
    v: Literal[1] = SCHEMA_VERSION
    node: Name
    t: UnixTime

    def to_map(self) -> dict[str, Any]:
        """Plain maps and lists all the way down (bytes stay bytes)."""
        out: dict[str, Any] = msgspec.to_builtins(self, builtin_types=(bytes,))
        return out

    @classmethod
    def from_map(cls, m: dict[str, Any]) -> Any:
        """A map (e.g. from SQLite or a StateReply) through the same checks as the wire."""
        try:
            return msgspec.convert(m, cls, builtin_types=(bytes,))
        except msgspec.ValidationError as e:
            raise SchemaError(f"{cls.TOPIC}: {e}") from None


# --- payload parts ---------------------------------------------------------------------------
class Part(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = msgspec.to_builtins(self, builtin_types=(bytes,))
        return out


class ProbeEvidence(Part, frozen=True):
    """One probe's distance between the opened record and the verifier's replay."""

    probe: Key
    layer: Annotated[int, Meta(ge=-1, le=1 << 16)] | None = None
    identical: bool = False
    rel: Number = 0.0  # relative L2 distance over the probe
    max_pos_rel: Number = 0.0
    max_ulp: Number = 0.0
    n_diff: Count = 0
    n: Count = 0
    per_position_rel: Annotated[list[Number], Meta(max_length=1 << 16)] = []
    band: Number | None = None  # the calibrated noise limit for this probe, when cross-device


class Evidence(Part, frozen=True):
    """Why a verdict says what it says; every field optional, as each status fills some."""

    mode: Literal["", "exact", "band"] = ""
    pair: Ident = ""  # prover device class | reference device class
    score: Number | None = None
    first_diff: Key = ""
    notes: Annotated[list[Text], Meta(max_length=64)] = []
    probes: Annotated[list[ProbeEvidence], Meta(max_length=1024)] = []
    over_band: Annotated[list[Key], Meta(max_length=1024)] = []
    not_greedy: Annotated[list[Count], Meta(max_length=1 << 16)] = []
    chain_break: Key = field(default="", name="break")  # gap, fork, reorder, ...
    commit_t: UnixTime | None = None  # when the node committed it (latency figures)
    # Every mismatch says how its attribution ended (`Verdict.attribution`), and in words why
    # it names no exact setup when it does not (budget, candidates shed, none reproduces the
    # record, ...). Here rather than on the Verdict: omitted when empty, so a verdict signed by
    # a verifier that predates them still checks on a monitor that knows them.
    attribution_status: AttributionStatus = ""
    attribution_note: Text = ""


class Candidate(Part, frozen=True):
    """One setup the verifier tried to explain a mismatch (replay/attribution.py)."""

    field: Key  # the setup field(s) changed: "dtype", or "batch_size+dtype" for a pair
    changes: Annotated[dict[Key, Scalar], Meta(max_length=32)] = {}
    exact: bool = False
    score: Number | None = None
    identical_probes: Count = 0
    probes: Count = 0
    first_diff: Key = ""
    error: Text = ""

    def fields(self) -> list[str]:
        return self.field.split("+")


MAX_ROWS = 4096  # rows in one batch's manifest: far above any replay cap (max_batch, 256)
SubmitBytes = Annotated[bytes, Meta(max_length=16 << 20)]


class ManifestRow(Part, frozen=True):
    """One row of a batch, in every record of that batch (`manifest`, fpmon/manifest.py): the
    request id and the digest of the authenticated client request behind the row. Both empty:
    a row no client asked for (a filler), which is how an agent's manifest lists every row its
    engine ran whether or not a request came with it."""

    request_id: Ident = ""
    digest: Hash = b""


class ClientRequest(Part, frozen=True):
    """A record's own row's client request (`request`), as the agent's intake received it:
    `client` is the Curve public key (Z85) that ZAP authenticated, "" without Curve; `submit`
    is the client's `submit` payload, byte for byte. The row's manifest digest is sha256 over
    both (fpmon/manifest.py), so it binds what the client sent."""

    client: Ident = ""
    submit: SubmitBytes = b""


def _mem_within(used: float | None, total: float | None, what: str) -> None:
    """An impossible pair (more used than there is) fails decode like an out-of-bounds figure."""
    if used is not None and total is not None and used > total:
        raise ValueError(f"{what}: mem_used {used:g} above mem_total {total:g}")


class GpmMetrics(Part, frozen=True):
    """NVML GPU Performance Monitoring (Hopper and newer) between two GPM samples `interval_s`
    apart, device-wide (every process on the GPU). A metric the GPU did not return is None."""

    interval_s: Interval
    graphics_util: Pct | None = None  # % of time any context was active (GPM's busy time)
    sm_util: Pct | None = None  # % of SMs busy
    sm_occupancy: Pct | None = None  # % of the SMs' warp slots in use
    tensor_util: Pct | None = None  # % of time any tensor pipe was busy
    tensor_hmma_util: Pct | None = None  # fp16/bf16 tensor pipe
    tensor_imma_util: Pct | None = None  # int8 tensor pipe
    tensor_dfma_util: Pct | None = None  # fp64 tensor pipe
    dram_bw_util: Pct | None = None  # % of peak DRAM bandwidth
    fp16_util: Pct | None = None  # non-tensor fp16
    fp32_util: Pct | None = None  # non-tensor fp32
    fp64_util: Pct | None = None  # non-tensor fp64


class GpuProcess(Part, frozen=True):
    """One process holding a compute context on the GPU (`nvmlDeviceGetComputeRunningProcesses`)."""

    pid: Pid  # as NVML reports it (the host's pid namespace)
    used_memory: ByteCount | None = None  # None: NVML did not report it
    name: Ident | None = None  # None: not visible from the agent (gone, another pid namespace)
    engine: bool | None = None  # the serving engine (the agent or a child); None: cannot tell


class GpuSample(Part, frozen=True):
    """One GPU's figures at one second. A figure NVML could not read is absent (None), never 0.

    Only the GPUs the node's engine uses are reported (see `Telemetry.scope`)."""

    index: Annotated[int, Meta(ge=0, le=1024)]
    uuid: Ident | None = None
    name: Ident | None = None
    util: Pct | None = None  # NVML: % of time a kernel was running
    mem_util: Pct | None = None  # %
    mem_used: ByteCount | None = None  # bytes
    mem_total: ByteCount | None = None  # bytes
    power_w: Watts | None = None
    sm_clock_mhz: MHz | None = None
    temp_c: Celsius | None = None
    procs: Count | None = None
    xid_errors: Count = 0
    last_xid: Int64 | None = None
    errors: Annotated[dict[Key, Text], Meta(max_length=64)] = {}
    # "ok" (figures in `gpm`), "unsupported: <why>", "error: <why>", "first sample" (GPM needs
    # two samples an interval apart); "" from an agent that does not read GPM.
    gpm_status: Text = ""
    gpm: GpmMetrics | None = None
    processes: Annotated[list[GpuProcess], Meta(max_length=256)] | None = None  # None: unread

    def __post_init__(self) -> None:
        _mem_within(self.mem_used, self.mem_total, f"GPU {self.index}")


class HostSample(Part, frozen=True):
    """The host's CPU and memory, from /proc; the only figures a node without NVIDIA GPUs has."""

    cpus: Count = 0
    cpu_util: Pct | None = None
    mem_total: ByteCount | None = None
    mem_used: ByteCount | None = None
    load1: Load | None = None
    note: Text = ""

    def __post_init__(self) -> None:
        _mem_within(self.mem_used, self.mem_total, "host")


class ProcessSample(Part, frozen=True):
    """The serving engine's own process (the agent, which hosts the engine) and its children:
    hidden work inside the engine process shows here on hosts without GPUs too."""

    pid: Pid
    children: Count = 0
    cpu_s: CpuSeconds | None = None  # user + system seconds since start, children included
    cpu_util: CpuPct | None = None  # % of one core over the last interval
    rss: ByteCount | None = None  # bytes, children included
    threads: Count | None = None
    note: Text = ""  # how it was measured (psutil, /proc) or why not


# Activity-seconds (a % of the time x seconds, summed over a node's GPUs) and the window they
# cover: wider than `Seconds`, since one absurd figure in a node summary would make the whole
# state reply a schema reject.
ActivitySeconds = Annotated[float, Meta(ge=0.0, le=1e12)]
RatioThreshold = Annotated[float, Meta(ge=1.0, le=1e6)]  # as `[accounting] ratio` is checked


class CapacityMetric(Part, frozen=True):
    """One metric of a node's accounting window (replay/accounting.py): what its GPUs did
    against what its committed tokens explain. The ratio is observed / explained; the verifier
    calls it `over` when it is above `threshold` and the excess above `floor_s`."""

    metric: Key  # util, sm_util, sm_occupancy, tensor_util, dram_bw_util
    observed_s: ActivitySeconds  # activity-seconds the node's own GPUs reported
    explained_s: ActivitySeconds  # committed tokens x the reference's activity per token
    threshold: RatioThreshold
    floor_s: ActivitySeconds = 0.0
    over: bool = False
    explained_by: Text = ""  # where the per-token figure came from


class CapacityWindow(Part, frozen=True):
    """The verifier's latest accounting window for one node: every metric it judged, and why
    each other one was not (no GPM on the node, no replay on the reference yet, ...)."""

    start_t: UnixTime
    window_s: ActivitySeconds
    tokens: Count  # committed in the window
    gpus: Annotated[int, Meta(ge=0, le=1 << 16)] = 0
    metrics: Annotated[list[CapacityMetric], Meta(max_length=32)] = []
    not_judged: Annotated[dict[Key, Text], Meta(max_length=32)] = {}
    threshold_source: Text = ""


# --- messages --------------------------------------------------------------------------------
Setup = Annotated[dict[Key, Value1], Meta(max_length=64)]


class Commit(Message, frozen=True, omit_defaults=True):
    """Published for every record as soon as it is durable."""

    TOPIC: ClassVar[str] = "commit"
    seq: Seq
    request_id: Ident
    record_digest: Hash
    chain: Hash
    setup: Setup
    model: Ident
    prompt_tokens: Tokens
    output_tokens: Tokens
    # Committed timings: evidence of hidden work that leaves numerics untouched.
    prefill_s: Seconds = 0.0
    decode_s: Seconds = 0.0
    # The root of the batch's row manifest (fpmon/manifest.py): every commit of one batch names
    # the same root, so a verifier links an opened record's rows to its siblings' commitments
    # without opening them. b"": a record without a manifest (an agent before manifests).
    manifest: Hash = b""


class Head(Message, frozen=True):
    """A signed chain head: Ed25519 over `head_message(node, seq, chain)`.

    `final` marks the head an agent signs as it stops: silence after it is not a fault.
    """

    TOPIC: ClassVar[str] = "head"
    seq: Seq
    chain: Hash
    sig: Hash
    pubkey: Hash
    final: bool = False


class Telemetry(Message, frozen=True):
    """Per-GPU figures from NVML for the GPUs the node's engine uses; `gpus` is empty on hosts
    without NVIDIA GPUs and for engines on the CPU. `scope` says which GPUs and why."""

    TOPIC: ClassVar[str] = "telemetry"
    gpus: Annotated[list[GpuSample], Meta(max_length=1024)] = []
    host: HostSample = HostSample()
    source: TelemetrySource = "nvml"  # "host": no NVIDIA GPU, host CPU/memory only
    scope: Text = ""  # e.g. "engine device cuda:0 -> GPU-8f3e... (CUDA_VISIBLE_DEVICES=1)"
    engine: ProcessSample | None = None


class Verdict(Message, frozen=True):
    TOPIC: ClassVar[str] = "verdict"
    seq: Seq
    status: Status
    request_id: Ident = ""
    evidence: Evidence = Evidence()
    attribution: Annotated[list[Candidate], Meta(max_length=256)] = []
    declared: Setup = {}
    replay_s: Seconds = 0.0
    reference: Ident = ""  # the reference device, e.g. "cpu" or "NVIDIA H100 80GB HBM3"
    cross_gpu: bool = False
    reason: Text = ""
    sig: Hash = b""  # the verifier's Ed25519 signature (fpmon/signing.py; empty: unsigned)


class Alert(Message, frozen=True):
    TOPIC: ClassVar[str] = "alert"
    id: Ident
    kind: AlertKind
    severity: Severity
    message: Text
    seq: SeqOrNone = -1
    details: Map = {}
    sig: Hash = b""  # the verifier's Ed25519 signature (fpmon/signing.py; empty: unsigned)


class OpenRequest(Message, frozen=True):
    """Verifier -> agent (DEALER -> ROUTER): reveal record `seq`. `node` is the verifier."""

    TOPIC: ClassVar[str] = "open"
    seq: Seq
    nonce: Nonce


class OpenReply(Message, frozen=True):
    """`status`: ok (record holds the committed bytes), purged, unknown, error."""

    TOPIC: ClassVar[str] = "opened"
    seq: SeqOrNone  # -1: the request itself was refused
    nonce: Nonce
    status: OpenStatus
    record: Blob | None = None
    reason: Text = ""


MAX_LINKS = 1024  # per links reply: ~0.5 MB of commits, well inside the frame limit


class Link(Part, frozen=True):
    """One position of a node's chain, from its own log; `commit` rebuilt from the kept record
    (None once retention purged the body: the link still proves the chain)."""

    seq: Seq
    record_digest: Hash
    chain: Hash
    commit: Commit | None = None


class LinksRequest(Message, frozen=True):
    """Verifier -> agent (openings channel): the chain positions `first` .. `first+count-1`.

    How the verifier repairs a hole (commits lost by a hub restart, a crash, a flood) and
    anchors a chain it has not seen before, instead of accusing the node of a gap.
    """

    TOPIC: ClassVar[str] = "links?"
    first: Seq
    count: Annotated[int, Meta(ge=1, le=MAX_LINKS)]
    nonce: Nonce


class LinksReply(Message, frozen=True):
    """`links` in seq order from `first`, as many as the log holds (fewer than asked when the
    log ends); `head` is the node's signature over the last link, binding them all.
    `status`: ok, unknown (the log holds nothing from `first`), error."""

    TOPIC: ClassVar[str] = "links"
    nonce: Nonce
    first: Seq
    status: Literal["ok", "unknown", "error"]
    links: Annotated[list[Link], Meta(max_length=MAX_LINKS)] = []
    head: Head | None = None
    log_head: SeqOrNone = -1  # the last seq in the node's log
    reason: Text = ""


class SubmitRequest(Message, frozen=True, omit_defaults=True):
    """Client -> agent intake: one generation request. `node` names the client."""

    TOPIC: ClassVar[str] = "submit"
    request_id: Ident
    prompt: LongText
    max_tokens: Annotated[int, Meta(ge=1, le=1 << 20)]
    # The prompt as token ids instead of text (then `prompt` is ""): what a token-level client
    # sends, and what a verifier compares with a record's tokens without a tokenizer.
    prompt_ids: Annotated[list[TokenId], Meta(max_length=1 << 20)] | None = None


class SubmitReply(Message, frozen=True):
    TOPIC: ClassVar[str] = "submitted"
    request_id: Ident
    status: SubmitStatus
    completion: LongText = ""
    output_ids: Annotated[list[TokenId], Meta(max_length=1 << 20)] = []
    seq: SeqOrNone = -1
    reason: Text = ""


class ChallengePoint(Part, frozen=True):
    """One judged verifier-timed challenge (replay/challenges.py): the verifier's stopwatch."""

    t: UnixTime  # when the verifier sent it
    seq: Seq  # the node's record of it
    latency_s: Seconds  # send -> reply, timed by the verifier
    reference_s: Seconds  # the reference's replay of the record (prefill + decode)
    queue_s: Seconds = 0.0  # committed work the node did meanwhile (it queued behind)
    committed_s: Seconds = 0.0  # what the node's record says its engine spent on it
    ratio: Number = 0.0  # latency_s / reference_s
    over: bool = False  # beyond max_ratio x (reference_s + queue_s) + slack_s


class ChallengeSummary(Part, frozen=True):
    """A node's verifier-timed challenges so far (this daemon's run)."""

    sent: Count = 0
    answered: Count = 0
    judged: Count = 0
    over: Count = 0
    failed: Count = 0  # refused, timed out, unreachable, uncommitted, unopened
    not_judged: Count = 0  # the verifier's side: shed, cross-device, unverifiable, ...
    median_ratio: Number | None = None  # over `recent`
    max_ratio: Number = 0.0  # the band: latency <= max_ratio x expected + slack_s
    slack_s: Seconds = 0.0
    alerted: bool = False  # suspected_hidden_work raised and still holding
    recent: Annotated[list[ChallengePoint], Meta(max_length=64)] = []


class NodeSummary(Part, frozen=True):
    """One node as the verifier sees it, in a `StateReply` (replay/summary.py)."""

    commits: Count = 0
    sampled: Count = 0
    verified: Count = 0
    coverage: Number = 0.0
    verdicts: Annotated[dict[Status, Count], Meta(max_length=16)] = {}
    last_verdict_t: UnixTime = 0.0
    chain_head_seq: SeqOrNone = -1
    signed_head_seq: SeqOrNone = -1
    last_telemetry: Telemetry | None = None
    last_telemetry_t: UnixTime = 0.0
    rejects: Annotated[dict[Key, Count], Meta(max_length=64)] = {}
    shed: Count = 0
    suspect: bool = False
    sample_rate: Number = 0.0
    capacity: Text = ""  # the accounting in words: checked or not, and the last window
    declared: Setup = {}
    accounting: CapacityWindow | None = None  # the last window's figures; None: none yet
    challenges: ChallengeSummary | None = None  # None: this node is not challenged


class StateRequest(Message, frozen=True):
    """Monitor -> replay daemon (DEALER -> ROUTER): current state at once (zguide Clone)."""

    TOPIC: ClassVar[str] = "state?"
    since_verdicts: Count = 0


class StateReply(Message, frozen=True):
    """The daemon's current picture: per-node summaries, recent verdicts, open alerts.

    `nodes` maps node name -> its summary; `verdicts`/`alerts` are typed as their own
    messages; `stream_seq` is the sequence of the last verdict/alert published, so a late
    joiner can drop updates it already has.
    """

    TOPIC: ClassVar[str] = "state"
    nodes: Annotated[dict[Name, NodeSummary], Meta(max_length=100_000)] = {}
    verdicts: Annotated[list[Verdict], Meta(max_length=100_000)] = []
    alerts: Annotated[list[Alert], Meta(max_length=100_000)] = []
    stream_seq: Count = 0
    sig: Hash = b""  # the verifier's Ed25519 signature (fpmon/signing.py)


MESSAGE_TYPES: dict[str, type[Message]] = {
    m.TOPIC: m
    for m in (
        Commit,
        Head,
        Telemetry,
        Verdict,
        Alert,
        OpenRequest,
        OpenReply,
        SubmitRequest,
        SubmitReply,
        StateRequest,
        StateReply,
        LinksRequest,
        LinksReply,
    )
}
