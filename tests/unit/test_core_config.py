"""The one config layer (fpmon/config.py) as every component sees it: each example loads, an
unknown key or a bad value is one line naming the file, the section and the key, relative paths
are relative to the config file, and secrets (and configs naming them) must be private."""

from __future__ import annotations

import os
import re
import shutil
import tomllib
from pathlib import Path

import pytest

from fpmon import config, tomlw
from fpmon.agents.config import AgentConfig
from fpmon.agents.config import load_config as load_agent
from fpmon.errors import FpmonError
from fpmon.monitor.config import MonitorConfig
from fpmon.monitor.config import load_config as load_monitor
from fpmon.replay import config as replay_config
from fpmon.replay.config import ReplayConfig
from fpmon.replay.hub import HubConfig
from fpmon.replay.hub import load_config as load_hub

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
LOADERS = {"agent": load_agent, "replay": replay_config.load, "hub": load_hub}
LOADERS["monitor"] = load_monitor


def _example(tmp_path: Path, name: str) -> Path:
    """deploy/NAME as an operator installs it: private (0600), with the sampling key it names."""
    (tmp_path / "deploy").mkdir(exist_ok=True)
    p = tmp_path / "deploy" / name
    shutil.copy(DEPLOY / name, p)
    p.chmod(0o600)
    key = tmp_path / "keys" / "replay.sampling.key"
    key.parent.mkdir(exist_ok=True)
    key.write_text(os.urandom(32).hex())
    key.chmod(0o600)
    return p


def _write(tmp_path: Path, doc: dict, name: str = "x.toml") -> Path:
    p = tmp_path / name
    tomlw.write(p, doc)
    return p


def _replay_doc(tmp_path: Path) -> dict:
    doc = tomllib.loads((DEPLOY / "replay.example.toml").read_text())
    doc["sampling"].pop("key_file")
    return doc


@pytest.mark.parametrize(
    "name",
    sorted(p.name for p in DEPLOY.glob("*.example.toml")),
)
def test_every_example_config_loads(tmp_path: Path, name: str) -> None:
    cfg = LOADERS[name.split(".")[0]](_example(tmp_path, name))
    assert isinstance(cfg, AgentConfig | ReplayConfig | HubConfig | MonitorConfig)


def test_the_example_replay_config_resolves_its_paths_beside_itself(tmp_path: Path) -> None:
    cfg = replay_config.load(_example(tmp_path, "replay.example.toml"))
    assert cfg.replay.store == (tmp_path / "var" / "replay.sqlite").resolve()
    assert cfg.sampling.key_file == (tmp_path / "keys" / "replay.sampling.key").resolve()
    assert cfg.replay.signing_key_path == (tmp_path / "var" / "verifier-signing.key").resolve()


@pytest.mark.parametrize(
    ("section", "key", "needle"),
    [
        # The misspellings that were taken silently, their defaults used instead.
        ("replay", "metrics_prot", "[replay] unknown key 'metrics_prot'; known: name, store, "),
        ("replay", "devcie", "[replay] unknown key 'devcie'; known: name, store, "),
        ("sampling", "rat", "[sampling] unknown key 'rat'; known: rate, suspect_rate, "),
        ("queue", "maxx", "[queue] unknown key 'maxx'; known: max"),
        ("timing", "margn", "[timing] unknown key 'margn'"),
        ("attribution", "enable", "[attribution] unknown key 'enable'"),
    ],
)
def test_a_misspelt_replay_key_is_named_with_the_file(
    tmp_path: Path, section: str, key: str, needle: str
) -> None:
    doc = _replay_doc(tmp_path)
    doc.setdefault(section, {})[key] = 1
    with pytest.raises(FpmonError, match=re.escape(f"replay.toml: {needle}")):
        replay_config.load(_write(tmp_path, doc, "replay.toml"))


def test_an_unknown_replay_section_is_named(tmp_path: Path) -> None:
    doc = _replay_doc(tmp_path)
    doc["timming"] = {"margin": 1.0}
    with pytest.raises(FpmonError, match=r"unknown key 'timming'; known: replay, models, "):
        replay_config.parse(tmp_path / "replay.toml", doc)


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("replay", "metrics_port", 70000, "[replay] metrics_port = 70000 must be <= 65535"),
        ("openings", "deadline_s", 0, "[openings] deadline_s = 0 must be > 0"),
        ("openings", "retries", -1, "[openings] retries = -1 must be >= 0"),
        ("openings", "max_inflight", 0, "[openings] max_inflight = 0 must be >= 1"),
        ("queue", "max", 0, "[queue] max = 0 must be >= 1"),
        ("timing", "capacity_window_s", 0, "[timing] capacity_window_s = 0 must be > 0"),
        ("limits", "head_timeout_s", -5, "[limits] head_timeout_s = -5 must be > 0"),
        ("limits", "state_burst", 0, "[limits] state_burst = 0 must be > 0"),
        ("sampling", "suspect_rate", 1.5, "[sampling] suspect_rate = 1.5 must be <= 1"),
        ("replay", "threads", "4", "[replay] threads = '4': expected an integer, got a string"),
    ],
)
def test_replay_values_out_of_range_are_refused(
    tmp_path: Path, section: str, key: str, value: object, needle: str
) -> None:
    doc = _replay_doc(tmp_path)
    doc[section][key] = value
    with pytest.raises(FpmonError, match=re.escape(needle)):
        replay_config.parse(tmp_path / "replay.toml", doc)


def test_hub_keys_are_checked(tmp_path: Path) -> None:
    with pytest.raises(FpmonError, match=r"hub\.toml: \[hub\] unknown key 'xpubb'; known: xsub"):
        load_hub(_write(tmp_path, {"hub": {"xpubb": "tcp://127.0.0.1:1"}}, "hub.toml"))
    with pytest.raises(FpmonError, match=r"\[hub\] max_message_bytes = 0 must be >= 1"):
        load_hub(_write(tmp_path, {"hub": {"max_message_bytes": 0}}, "hub.toml"))
    half = {"curve": {"publishers_dir": "p", "subscribers_dir": "s"}}
    with pytest.raises(FpmonError, match=r"\[curve\] lacks the required key 'secret_file'"):
        load_hub(_write(tmp_path, half, "hub.toml"))


def test_relative_paths_are_relative_to_the_config_file_everywhere(
    tmp_path: Path, curve_cert
) -> None:
    elsewhere = tmp_path / "etc"
    elsewhere.mkdir()
    curve_cert(elsewhere, "monitor")
    server = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    mon = load_monitor(
        _write(
            elsewhere,
            {
                "monitor": {"record": "feeds/today.fprec"},
                "curve": {"server_key": server, "client_keys": "monitor.key_secret"},
            },
        )
    )
    assert mon.monitor.record == elsewhere / "feeds" / "today.fprec"
    assert mon.curve is not None and mon.curve.client_keys == elsewhere / "monitor.key_secret"
    assert mon.curve.secret  # read from beside the config, wherever the monitor was started
    hub = load_hub(
        _write(
            elsewhere,
            {
                "curve": {
                    "secret_file": "monitor.key_secret",
                    "publishers_dir": "p",
                    "subscribers_dir": "s",
                }
            },
        )
    )
    assert hub.curve is not None and hub.curve.publishers_dir == elsewhere / "p"
    agent = load_agent(_write(elsewhere, {"state_dir": "state", "store": {"path": "r.sqlite"}}))
    assert (agent.state_dir, agent.db_path) == (elsewhere / "state", elsewhere / "r.sqlite")
    assert load_agent(_write(elsewhere, {})).state_dir == elsewhere / "fpmon-agent-state"


def test_an_empty_path_is_unset(tmp_path: Path) -> None:
    assert load_monitor(_write(tmp_path, {"monitor": {"record": ""}})).monitor.record is None
    agent = load_agent(_write(tmp_path, {"state_dir": "s", "store": {"path": ""}}))
    assert agent.db_path == tmp_path / "s" / "records.sqlite"


def test_a_world_readable_config_naming_a_secret_is_refused_in_every_component(
    tmp_path: Path,
    curve_cert,
) -> None:
    _, secret = curve_cert(tmp_path, "c")
    server = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    docs = {
        "monitor": ({"curve": {"server_key": server, "client_keys": secret}}, load_monitor),
        "hub": (
            {"curve": {"secret_file": secret, "publishers_dir": "p", "subscribers_dir": "s"}},
            load_hub,
        ),
        "replay": (
            {**_replay_doc(tmp_path), "replay": {"signing_key_file": "verifier.key"}},
            replay_config.load,
        ),
        "agent": ({"security": {"keys_dir": "keys"}}, load_agent),
    }
    for name, (doc, load) in docs.items():
        p = _write(tmp_path, doc, f"{name}.toml")
        load(p)  # private: fine
        p.chmod(0o644)
        with pytest.raises(FpmonError) as e:
            load(p)
        assert "names secrets" in str(e.value) and f"chmod 600 {p}" in str(e.value), name


def test_a_world_readable_secret_file_is_refused_and_a_group_readable_one_is_not(
    tmp_path: Path,
    curve_cert,
) -> None:
    doc = _replay_doc(tmp_path)
    key = tmp_path / "sampling.key"
    key.write_text(os.urandom(32).hex())
    doc["sampling"]["key_file"] = "sampling.key"
    key.chmod(0o640)  # one policy: others may not read it; the service's group may
    assert len(replay_config.parse(tmp_path / "replay.toml", doc).sampling.secret) == 32
    key.chmod(0o604)
    with pytest.raises(FpmonError, match=r"\[sampling\] key_file .* world-readable.*chmod 600"):
        replay_config.parse(tmp_path / "replay.toml", doc)
    _, cert = curve_cert(tmp_path, "m")
    os.chmod(cert, 0o644)
    server = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"
    with pytest.raises(FpmonError, match=r"\[curve\] client_keys .* world-readable"):
        load_monitor(_write(tmp_path, {"curve": {"server_key": server, "client_keys": cert}}))


def test_an_inline_secret_makes_the_config_secret(tmp_path: Path) -> None:
    doc = _replay_doc(tmp_path)
    doc["sampling"]["key"] = os.urandom(16).hex()
    p = _write(tmp_path, doc, "replay.toml")
    assert replay_config.load(p).sampling.secret == bytes.fromhex(doc["sampling"]["key"])
    p.chmod(0o644)
    with pytest.raises(FpmonError, match=r"names secrets \(\[sampling\] key\)"):
        replay_config.load(p)


def test_file_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(FpmonError, match=r"no such config file; start from deploy/hub\.example"):
        load_hub(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[hub]\nxsub = \n")
    with pytest.raises(FpmonError, match=r"bad\.toml: not valid TOML \(.*line 2"):
        load_hub(bad)


def test_messages_name_where_the_value_sits() -> None:
    with pytest.raises(FpmonError, match=r"^c\.toml: \[\[node\]\] #2 sign_pubkey: expected an"):
        config.decode(
            {"node": [_node("a"), {**_node("b"), "sign_pubkey": "00"}]}, ReplayConfig, "c.toml"
        )
    with pytest.raises(FpmonError, match=r"^c\.toml: \[probes\] layers\[1\] = -1 must be >= 0"):
        config.decode({"probes": {"layers": [0, -1]}}, AgentConfig, "c.toml")
    with pytest.raises(FpmonError, match=r"^c\.toml: engine = 3: expected a table, got an integer"):
        config.decode({"engine": 3}, AgentConfig, "c.toml")


def _node(name: str) -> dict:
    return {"name": name, "openings": "tcp://127.0.0.1:1", "sign_pubkey": "00" * 32}


def test_the_documented_replay_config_loads(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "REPLAY.md").read_text()
    block = re.search(r"```toml\n(.*?)```", text, re.S)
    assert block is not None
    doc = tomllib.loads(block[1].replace("…64 hex…", "00" * 32))
    cfg = replay_config.parse(tmp_path / "replay.toml", doc)
    assert cfg.replay.store == tmp_path / "replay.sqlite" and cfg.nodes[0].name == "node-a"
