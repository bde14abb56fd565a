"""The replay daemon's configuration: `ReplayConfig`, one TOML file in sections.

Decoded by the one config layer (`fpmon/config.py`): an unknown key in any section is an
error naming the file, the section and the key (a misspelt cap or grace would otherwise fall
back to its default, the opposite of what its author meant); ranges are checked; relative paths
are relative to the file; a config naming secrets must be private, and so must the secrets.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import msgspec

from fpmon import config
from fpmon.config import (
    Fraction,
    Invalid,
    NonNegative,
    NonNegativeFloat,
    Positive,
    PositiveFloat,
    PublicKeyHex,
    SecretPath,
    SecretStr,
    Section,
)
from fpmon.errors import FpmonError
from fpmon.replay.accounting import Settings, settings
from fpmon.replay.challenge_judge import CONFIRM, MAX_RATIO, SLACK_S, WINDOW
from fpmon.replay.limits import Caps

EXAMPLE = "deploy/replay.example.toml"
AttributionField = Literal["batch_size", "attn_impl", "dtype", "compiled"]
ATTRIBUTION_FIELDS: tuple[AttributionField, ...] = get_args(AttributionField)
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class DaemonConfig(Section):
    """`[replay]`: the daemon's own name, store, endpoints, device and keys."""

    name: str = "replay"  # our name in OpenRequests and StateReplies
    store: Path = Path("replay.sqlite")
    publish: str = "tcp://127.0.0.1:7801"  # our PUB for verdict/alert (bound)
    state: str = "tcp://127.0.0.1:7802"  # ROUTER answering StateRequest (bound)
    hub: str = ""  # hub XPUB to SUB from instead of each agent's PUB
    hub_xsub: str = ""  # when set, our PUB connects here instead of binding `publish`
    hub_curve_pubkey: str = ""  # the hub's Curve server key (Z85), when the hub runs Curve
    metrics_port: Port = 0  # 0: no Prometheus endpoint
    device: str = "cpu"
    threads: NonNegative = 0  # torch threads; 0: 1 on CPU (as agents run), default on GPU
    calibration: Path | None = None
    curve_secret_file: SecretPath | None = None  # our zmq.auth certificate (public + secret)
    state_clients_dir: Path | None = None  # Curve keys of monitors allowed to ask for state
    # Ed25519 key we sign verdicts, alerts and state replies with (PEM, 0600); made on first
    # start, public half as hex beside it (`.pub`). None: verifier-signing.key by the store.
    signing_key_file: SecretPath | None = None

    @property
    def signing_key_path(self) -> Path:
        return self.signing_key_file or self.store.with_name("verifier-signing.key")


class SamplingConfig(Section, dict=True):
    rate: Fraction = 0.05
    suspect_rate: Fraction = 0.5
    suspect_window_s: NonNegativeFloat = 600.0
    key_file: SecretPath | None = None  # hex, >= 16 bytes
    key: SecretStr | None = None  # the same, inline (the config must then be private)

    @cached_property
    def secret(self) -> bytes:
        """The PRF key choosing what is opened. Without one configured, a per-process random
        one: still unpredictable to nodes, but a restart picks a different sample."""
        if self.key_file is not None:
            if not self.key_file.exists():
                raise Invalid(
                    f"[sampling] key_file {self.key_file} does not exist; write 32+ random "
                    "bytes as hex there (python -c 'import os;print(os.urandom(32).hex())')"
                )
            config.check_private(self.key_file, "[sampling] key_file")
            text, where = self.key_file.read_text(), f"[sampling] key_file {self.key_file}"
        elif self.key is not None:
            text, where = self.key, "[sampling] key"
        else:
            return os.urandom(32)
        try:
            raw = bytes.fromhex(text.strip())
        except ValueError:
            raise Invalid(f"{where} is not hex") from None
        if len(raw) < 16:
            raise Invalid(f"{where} has {len(raw)} bytes; use at least 16")
        return raw


class OpeningsConfig(Section):
    deadline_s: PositiveFloat = 2.0  # per attempt
    retries: NonNegative = 2  # then `unopened`
    max_inflight: Positive = 256  # more sampled at once are shed
    # a hole in a node's feed unanswered this long raises `gap_unrepaired` (a warning)
    repair_timeout_s: PositiveFloat = 60.0
    grace_s: NonNegativeFloat = 30.0  # an answer this late after giving up is still judged
    max_late: Positive = 4096  # answers awaited in grace at once (a bound on memory)
    min_retention_s: NonNegativeFloat = 3600.0  # `purged` sooner after commit: a dodge


class QueueConfig(Section):
    max: Positive = 64  # replay queue; full -> shed, alerted


class AttributionConfig(Section):
    enabled: bool = True
    fields: tuple[AttributionField, ...] = ATTRIBUTION_FIELDS  # tried in this order
    batch_sizes: tuple[Positive, ...] = (1, 2, 4, 8)
    max_candidates: NonNegative = 16


class TimingConfig(Section):
    margin: NonNegativeFloat = 0.5
    min_samples: NonNegative = 5
    capacity_margin: NonNegativeFloat = 0.25
    capacity_window_s: PositiveFloat = 60.0
    interference_profile: Path | None = None  # JSON from `fpmon replay interference`


class ChallengesConfig(Section, dict=True):
    """`[challenges]`: verifier-timed requests through each node's intake (replay/challenges.py).

    Only nodes with `[[node]] intake` are challenged. With Curve, the client certificate's public
    key must be in the agent's `[security] clients_dir` (docs/REPLAY.md, the operator step)."""

    enabled: bool = False
    mean_interval_s: PositiveFloat = 300.0  # per node; exponential intervals (Poisson)
    # tokens asked for: one value, or a list the PRF draws from (match the clients' mix)
    max_new_tokens: Annotated[int, msgspec.Meta(ge=1, le=1 << 20)] | tuple[Positive, ...] = 16
    timeout_s: PositiveFloat = 60.0  # no reply by then: `challenge_failed` (a warning)
    client: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "client"
    prompts: tuple[str, ...] = ()  # the pool; empty (and no prompt_file): seeded random words
    prompt_file: Path | None = None  # one prompt per line, added to `prompts`
    # our client certificate at the nodes' intakes; None: [replay] curve_secret_file
    curve_secret_file: SecretPath | None = None
    # the band, from the measured honest spread (replay/challenge_judge.py, docs/REPLAY.md)
    max_ratio: PositiveFloat = MAX_RATIO
    slack_s: NonNegativeFloat = SLACK_S
    confirm: Positive = CONFIRM  # over-band challenges among the node's last `window` to alert
    window: Positive = WINDOW
    verdict_timeout_s: PositiveFloat = 600.0  # answered, no verdict by then: `challenge_failed`

    @property
    def token_choices(self) -> tuple[int, ...]:
        t = self.max_new_tokens
        return (t,) if isinstance(t, int) else t

    @cached_property
    def pool(self) -> tuple[str, ...]:
        if self.prompt_file is None:
            return self.prompts
        try:
            text = self.prompt_file.read_text()
        except OSError as e:
            raise Invalid(f"[challenges] prompt_file {self.prompt_file}: {e.strerror}") from None
        return self.prompts + tuple(line for line in text.splitlines() if line.strip())


class LimitsConfig(Section):
    max_message_bytes: Positive = 4 << 20
    flood_msgs_per_s: PositiveFloat = 20_000.0
    flood_rejects_per_min: NonNegative = 100
    head_timeout_s: PositiveFloat = 10.0  # commits left without a signed head this long: alert
    deaf_after_s: NonNegativeFloat = 10.0  # a SUB hearing nothing this long: alert; 0 off
    state_rate_per_s: PositiveFloat = 2.0  # StateRequests per peer per second (token bucket)
    state_burst: PositiveFloat = 5.0  # ... and in a burst; all peers together get 10x both
    # replay caps (replay/limits.py): beyond them a record is `unverifiable`, the node suspect
    max_batch: Positive = Caps.max_batch
    max_tokens: Positive = Caps.max_tokens
    max_replay_s: PositiveFloat = Caps.max_replay_s
    # row manifests (replay/rows.py): "require" (none in a record: covert_rows), "check"
    # (checked where present: agents before manifests), "off" (not checked)
    manifests: Literal["require", "check", "off"] = "require"

    @property
    def caps(self) -> Caps:
        return Caps(self.max_batch, self.max_tokens, self.max_replay_s)


class NodeConfig(Section):
    """One agent the daemon verifies: where it publishes, where it opens, the keys pinned."""

    name: str
    openings: str  # the agent's openings ROUTER
    sign_pubkey: PublicKeyHex  # Ed25519 head key, pinned: heads signed otherwise are breaks
    publish: str = ""  # the agent's PUB (commit/head/telemetry); unused with a hub
    curve_pubkey: str = ""  # Z85 Curve server key of the agent; required outside loopback
    intake: str = ""  # the agent's intake ROUTER, for verifier-timed challenges ([challenges])
    # Row manifests for this node, over [limits] manifests: "check" for a vLLM sidecar node
    # (agents/sidecar.py), whose server cannot list a window's rows by request id yet.
    manifests: Literal["require", "check", "off"] | None = None


class ReplayConfig(Section):
    replay: DaemonConfig = msgspec.field(default_factory=DaemonConfig)
    # model name as records declare it = what the verifier loads (preset or local folder)
    models: dict[str, str] = msgspec.field(default_factory=lambda: {"tiny": "tiny"})
    sampling: SamplingConfig = msgspec.field(default_factory=SamplingConfig)
    openings: OpeningsConfig = msgspec.field(default_factory=OpeningsConfig)
    queue: QueueConfig = msgspec.field(default_factory=QueueConfig)
    attribution: AttributionConfig = msgspec.field(default_factory=AttributionConfig)
    timing: TimingConfig = msgspec.field(default_factory=TimingConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    challenges: ChallengesConfig = msgspec.field(default_factory=ChallengesConfig)
    # thresholds of undeclared_capacity / foreign_process, checked by replay/accounting.py
    accounting: dict[str, Any] = msgspec.field(default_factory=dict)
    nodes: list[NodeConfig] = msgspec.field(default_factory=list, name="node")

    @property
    def accounting_settings(self) -> Settings:
        return settings(self.accounting, self.timing.capacity_margin)

    def check(self) -> None:
        if not self.nodes:
            raise Invalid("no [[node]] entries: list the agents this daemon verifies")
        seen: set[str] = set()
        for i, n in enumerate(self.nodes):
            if n.name in seen:
                raise Invalid(f"[[node]] #{i + 1}: node name {n.name!r} is listed twice")
            seen.add(n.name)
            if not n.publish and not self.replay.hub:
                raise Invalid(f"node {n.name!r} has no publish endpoint and no [replay] hub")
        sizes, cap = self.attribution.batch_sizes, self.limits.max_batch
        if any(b > cap for b in sizes):
            raise Invalid(
                f"[attribution] batch_sizes {list(sizes)} go beyond [limits] max_batch "
                f"{cap}: attribution would replay what the caps refuse"
            )
        if self.replay.curve_secret_file and not self.replay.state_clients_dir:
            raise Invalid(
                "[replay] curve_secret_file is set but state_clients_dir is not: with Curve the "
                "state endpoint answers only the monitor keys (*.key) in that folder"
            )
        _ = self.sampling.secret  # read (and check) the sampling key now, not at first use
        ch = self.challenges
        if ch.enabled:
            if not ch.token_choices:
                raise Invalid("[challenges] max_new_tokens is an empty list")
            if not any(n.intake for n in self.nodes):
                raise Invalid(
                    "[challenges] enabled, but no [[node]] has an intake endpoint to challenge"
                )
            _ = ch.pool  # read the prompt file now
            if ch.window < ch.confirm:
                raise Invalid(f"[challenges] window {ch.window} is below confirm {ch.confirm}")
            curved = [n.name for n in self.nodes if n.intake and n.curve_pubkey]
            if curved and not (ch.curve_secret_file or self.replay.curve_secret_file):
                # Plaintext challenges to a Curve intake all time out: every honest node would
                # carry a challenge_failed warning per challenge.
                raise Invalid(
                    f"[challenges] enabled and nodes {', '.join(curved[:5])} take Curve at "
                    "their intake, but no client certificate is set: set [challenges] "
                    "curve_secret_file (or [replay] curve_secret_file)"
                )
        try:
            _ = self.accounting_settings
        except FpmonError as e:
            raise Invalid(str(e)) from None


def parse(path: Path, doc: dict[str, Any]) -> ReplayConfig:
    """`doc` (a TOML document) as if read from `path`: relative paths are relative to it."""
    return config.decode(doc, ReplayConfig, path)


def load(path: str | Path) -> ReplayConfig:
    return config.load(path, ReplayConfig, example=EXAMPLE)
