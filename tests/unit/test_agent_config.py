"""Agent config: the example loads, bad files fail with one clear line, secrets stay private."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fpmon.agents.config import load_config
from fpmon.agents.keys import keygen, load_signing_key
from fpmon.agents.redteam import RedTeam
from fpmon.errors import FpmonError

EXAMPLE = Path(__file__).parents[2] / "deploy" / "agent.example.toml"


def test_example_config_loads():
    cfg = load_config(EXAMPLE)
    assert cfg.node == "node-a"
    assert cfg.engine.model == "tiny" and cfg.batching.max_batch == 4
    assert cfg.is_loopback_only() and not cfg.security.curve
    assert RedTeam.from_config(cfg.redteam).behaviours() == []


def _write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "a.toml"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_unknown_key_is_named(tmp_path):
    with pytest.raises(FpmonError, match=r"a\.toml: \[batching\] unknown key 'max_bach'; known: "):
        load_config(_write(tmp_path, "[batching]\nmax_bach = 3\n"))


def test_wrong_type_and_range_are_named(tmp_path):
    with pytest.raises(FpmonError, match="max_batch = 'four': expected an integer, got a string"):
        load_config(_write(tmp_path, '[batching]\nmax_batch = "four"\n'))
    with pytest.raises(FpmonError, match=r"\[batching\] max_batch = -1 must be >= 1"):
        load_config(_write(tmp_path, "[batching]\nmax_batch = -1\n"))
    with pytest.raises(FpmonError, match="dtype = 'fp8': use one of bfloat16, float16, float32"):
        load_config(_write(tmp_path, '[engine]\ndtype = "fp8"\n'))


def test_public_endpoint_without_curve_is_refused(tmp_path):
    with pytest.raises(FpmonError, match="need CurveZMQ"):
        load_config(_write(tmp_path, '[endpoints]\nintake = "tcp://0.0.0.0:7700"\n'))


def test_world_readable_config_with_secrets_is_refused(tmp_path):
    keygen(tmp_path / "keys")
    text = '[security]\ncurve = true\nkeys_dir = "keys"\n'
    with pytest.raises(FpmonError, match=r"world-readable.*chmod 600"):
        load_config(_write(tmp_path, text, 0o644))
    assert load_config(_write(tmp_path, text, 0o600)).security.curve


def test_keygen_files_are_private_and_world_readable_key_refused(tmp_path):
    out = keygen(tmp_path / "k")
    for f in (tmp_path / "k").iterdir():
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert len(bytes.fromhex(out["signing_public_hex"])) == 32
    load_signing_key(str(tmp_path / "k"), "")
    os.chmod(tmp_path / "k" / "signing.key", 0o644)
    with pytest.raises(FpmonError, match="world-readable"):
        load_signing_key(str(tmp_path / "k"), "")
    with pytest.raises(FpmonError, match="exists"):
        keygen(tmp_path / "k")


def test_redteam_table_is_checked(tmp_path):
    with pytest.raises(FpmonError, match=r"a\.toml: \[redteam\] unknown key 'actual_bach'"):
        load_config(_write(tmp_path, "[redteam]\nenabled = true\nactual_bach = 4\n"))
    with pytest.raises(FpmonError, match=r"\[redteam\] actual_attn = 'flash9': use one of"):
        load_config(_write(tmp_path, '[redteam]\nenabled = true\nactual_attn = "flash9"\n'))
    off = load_config(_write(tmp_path, "[redteam]\nenabled = false\nactual_batch = 4\n"))
    assert RedTeam.from_config(off.redteam).behaviours() == []
    with pytest.raises(FpmonError, match=r"\[redteam\] side_work_duty"):
        load_config(_write(tmp_path, "[redteam]\nenabled = true\nside_work_duty = 1.5\n"))
    with pytest.raises(FpmonError, match=r"\[redteam\] side_work_kind = 'gpu'"):
        load_config(_write(tmp_path, '[redteam]\nenabled = true\nside_work_kind = "gpu"\n'))
    # Off unless a duty is given; with one, announced with its kind and duty.
    assert RedTeam.from_config(off.redteam).side_work("cpu") is None
    hidden = load_config(_write(tmp_path, "[redteam]\nenabled = true\nside_work_duty = 0.25\n"))
    assert RedTeam.from_config(hidden.redteam).behaviours() == [
        "runs hidden compute work in its engine process at 25% duty"
    ]


def test_demo_configs_and_documented_config_load(tmp_path):
    import re

    demo = sorted((EXAMPLE.parent / "demo").glob("*.toml"))
    assert [p.stem for p in demo] == [
        "attn-cheat",
        "batch-cheat",
        "dtype-cheat",
        "hidden-work",
        "honest",
        "tamper",
    ]
    lies = {p.stem: RedTeam.from_config(load_config(p).redteam).behaviours() for p in demo}
    assert lies["honest"] == [] and len(lies["batch-cheat"]) == 1
    assert lies["hidden-work"] == ["runs hidden compute work in its engine process at 50% duty"]
    assert load_config(EXAMPLE.parent / "demo" / "batch-cheat.toml").engine.dtype == "float32"
    doc = (EXAMPLE.parents[1] / "docs" / "AGENT.md").read_text()
    block = re.search(r"```toml\n(.*?)```", doc, re.S).group(1)
    cfg = load_config(_write(tmp_path, block))
    assert cfg.batching.stall_s == 300 and cfg.security.verifiers_dir
    assert len(RedTeam.from_config(cfg.redteam).behaviours()) == 5


def test_vllm_engine_config_loads_and_sidecar_is_checked(tmp_path):
    cfg = load_config(EXAMPLE.parent / "agent.vllm.example.toml")
    assert cfg.engine.kind == "vllm" and cfg.vllm.max_num_seqs == 16
    vllm = '[engine]\nkind = "vllm"\n'
    server = '[vllm]\nserver = "http://127.0.0.1:8000"\n'
    assert load_config(_write(tmp_path, vllm + server)).vllm.server == "http://127.0.0.1:8000"
    with pytest.raises(FpmonError, match=r'\[vllm\] server attaches .* kind = "vllm"'):
        load_config(_write(tmp_path, server))
    with pytest.raises(FpmonError, match=r"\[vllm\]: server: give the server's URL"):
        load_config(_write(tmp_path, vllm + '[vllm]\nserver = "127.0.0.1:8000"\n'))
    with pytest.raises(FpmonError, match=r"leave attn = \"sdpa\""):
        load_config(_write(tmp_path, vllm + 'attn = "eager"\n' + server))
    lie = "[redteam]\nenabled = true\nactual_batch = 4\n"
    with pytest.raises(FpmonError, match=r"operator's server runs: unset them"):
        load_config(_write(tmp_path, vllm + server + lie))
    tamper = "[redteam]\nenabled = true\ntamper_openings = true\n"
    assert load_config(_write(tmp_path, vllm + server + tamper)).redteam.tamper_openings
    with pytest.raises(FpmonError, match=r"\[engine\] kind = 'trt': use one of hf, vllm"):
        load_config(_write(tmp_path, '[engine]\nkind = "trt"\n'))
