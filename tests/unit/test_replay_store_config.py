"""Store idempotency and resume rows; config errors are one actionable line."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from fpmon.errors import FpmonError
from fpmon.replay import config
from fpmon.replay.cli import parse_since
from fpmon.replay.limits import Caps
from fpmon.replay.store import Store
from fpmon.wire import Alert, Commit, Verdict

ROOT = Path(__file__).resolve().parents[2]


def commit(seq: int) -> Commit:
    return Commit(
        node="n1",
        t=1.0,
        seq=seq,
        request_id=str(seq),
        record_digest=b"d" * 32,
        chain=b"c" * 32,
        setup={"dtype": "float32"},
        model="tiny",
        prompt_tokens=1,
        output_tokens=2,
    )


def test_verdicts_and_alerts_are_written_once_and_clear_pending(tmp_path: Path) -> None:
    s = Store(tmp_path / "v.sqlite")
    s.add_pending([commit(1), commit(2)])
    s.set_opened("n1", 2, b"record-bytes")
    pend = {c.seq: (stage, rec) for c, stage, rec in s.pending()}
    assert pend == {1: ("open", None), 2: ("replay", b"record-bytes")}
    v = Verdict(node="n1", t=5.0, seq=1, status="match")
    assert s.add_verdict(v) and not s.add_verdict(v)
    assert [c.seq for c, _, _ in s.pending()] == [2]
    a = Alert(node="n1", t=5.0, id="x:1", kind="mismatch", severity="critical", message="m")
    assert s.add_alert(a) and not s.add_alert(a)
    s.close()
    s2 = Store(tmp_path / "v.sqlite")
    assert s2.sid == 2 and s2.verdict_counts() == {"n1": {"match": 1}}
    assert s2.verdicts(node="n1") == [v]
    s2.close()


def test_example_config_parses(tmp_path: Path) -> None:
    doc = tomllib.loads((ROOT / "deploy/replay.example.toml").read_text())
    doc["sampling"].pop("key_file")
    cfg = config.parse(tmp_path / "replay.toml", doc)
    assert cfg.nodes[0].name == "n1" and cfg.sampling.rate == 0.05 and cfg.queue.max == 64
    assert len(cfg.sampling.secret) == 32
    assert cfg.limits.caps == Caps(max_batch=256, max_tokens=32768, max_replay_s=120.0)
    o = cfg.openings
    assert (o.grace_s, o.max_late, o.min_retention_s) == (30.0, 4096, 3600.0)
    assert cfg.accounting == {}  # the example shows [accounting] commented: the defaults


def test_challenges_are_read(tmp_path: Path) -> None:
    doc = tomllib.loads((ROOT / "deploy/replay.example.toml").read_text())
    doc["sampling"].pop("key_file")
    assert not config.parse(tmp_path / "replay.toml", doc).challenges.enabled
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("first prompt\n\nsecond prompt\n")
    doc["challenges"].update(
        enabled=True, max_new_tokens=[8, 64], prompts=["inline"], prompt_file=str(prompts)
    )
    cfg = config.parse(tmp_path / "replay.toml", doc)
    ch = cfg.challenges
    assert ch.token_choices == (8, 64) and ch.pool == ("inline", "first prompt", "second prompt")
    assert (ch.max_ratio, ch.slack_s, ch.confirm, ch.window) == (1.5, 0.5, 5, 7)
    assert cfg.nodes[0].intake == "tcp://127.0.0.1:7710"


def test_challenges_to_curve_intakes_without_a_client_certificate_are_refused(
    tmp_path: Path,
) -> None:
    doc = tomllib.loads((ROOT / "deploy/replay.example.toml").read_text())
    doc["sampling"].pop("key_file")
    doc["challenges"].update(enabled=True)
    doc["replay"].pop("curve_secret_file", None)
    doc["node"][0]["curve_pubkey"] = "x" * 40
    with pytest.raises(FpmonError, match="no client certificate is set"):
        config.parse(tmp_path / "replay.toml", doc)


def test_caps_and_grace_are_read(tmp_path: Path) -> None:
    doc = tomllib.loads((ROOT / "deploy/replay.example.toml").read_text())
    doc["sampling"].pop("key_file")
    doc["limits"].update(max_batch=8, max_tokens=4096, max_replay_s=5)
    doc["openings"].update(grace_s=0, max_late=10, min_retention_s=60)
    cfg = config.parse(tmp_path / "replay.toml", doc)
    assert cfg.limits.caps == Caps(8, 4096, 5.0)
    o = cfg.openings
    assert (o.grace_s, o.max_late, o.min_retention_s) == (0.0, 10, 60.0)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.update(node=[]), "no [[node]]"),
        (lambda d: d["node"][0].update(sign_pubkey="zz"), "[[node]] #1 sign_pubkey: expected an"),
        (lambda d: d["node"][0].update(sign_pubkey="00"), "as 64 hex digits"),
        (lambda d: d["node"][0].pop("name"), "[[node]] #1 lacks the required key 'name'"),
        (lambda d: d["node"].append(dict(d["node"][0])), "listed twice"),
        (lambda d: d["attribution"].update(fields=["tp"]), "fields[0] = 'tp': use one of"),
        (lambda d: d["sampling"].update(rate=2), "[sampling] rate = 2 must be <= 1"),
        (lambda d: d["sampling"].update(key_file="missing.key"), "does not exist"),
        (lambda d: d["limits"].update(max_batchsize=64), "[limits] unknown key 'max_batchsize'"),
        (lambda d: d["openings"].update(grace=5), "[openings] unknown key 'grace'; known: "),
        (lambda d: d["limits"].update(max_batch=0), "[limits] max_batch = 0 must be >= 1"),
        (lambda d: d["limits"].update(max_tokens=0), "max_tokens = 0 must be >= 1"),
        (lambda d: d["limits"].update(max_replay_s=0), "max_replay_s = 0 must be > 0"),
        (lambda d: d["limits"].update(max_batch=4), "go beyond [limits] max_batch 4"),
        (lambda d: d["openings"].update(grace_s=-1), "grace_s = -1 must be >= 0"),
        (lambda d: d["openings"].update(min_retention_s=-1), "min_retention_s"),
        (lambda d: d.update(accounting={"ratios": {}}), "[accounting] has unknown keys"),
        (lambda d: d.update(accounting={"ratio": {"sm_util": 0.5}}), "ratio.sm_util = 0.5"),
        (lambda d: d["challenges"].update(rate=1), "[challenges] unknown key 'rate'"),
        (lambda d: d["challenges"].update(mean_interval_s=0), "mean_interval_s = 0 must be > 0"),
        (
            lambda d: d["challenges"].update(enabled=True, max_new_tokens=[]),
            "max_new_tokens is an empty list",
        ),
        (lambda d: d["challenges"].update(enabled=True, window=4), "window 4 is below confirm 5"),
        (lambda d: d["challenges"].update(enabled=True, prompt_file="none.txt"), "prompt_file"),
        (
            lambda d: (d["challenges"].update(enabled=True), d["node"][0].pop("intake")),
            "no [[node]] has an intake endpoint",
        ),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path: Path, change, needle: str) -> None:
    doc = tomllib.loads((ROOT / "deploy/replay.example.toml").read_text())
    doc["sampling"].pop("key_file")
    change(doc)
    with pytest.raises(FpmonError, match=re.escape(needle)):
        config.parse(tmp_path / "replay.toml", doc)


def test_world_readable_key_file_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_text("ab" * 32)
    key.chmod(0o644)
    doc = tomllib.loads((ROOT / "deploy/replay.example.toml").read_text())
    doc["sampling"]["key_file"] = str(key)
    with pytest.raises(FpmonError, match="chmod 600"):
        config.parse(tmp_path / "replay.toml", doc)


def test_since() -> None:
    assert parse_since("90s") == 90 and parse_since("1h") == 3600 and parse_since("2d") == 172800
    with pytest.raises(FpmonError):
        parse_since("soon")
