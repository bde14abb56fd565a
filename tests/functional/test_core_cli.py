"""The capture/compare CLI: the README's flow and every bad input (exit 2, one line, no trace)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fpmon.cli import main

PROMPT = "The treaty requires"


def _fpmon(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    return subprocess.run(
        [sys.executable, "-m", "fpmon", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_readme_flow(tmp_path: Path) -> None:
    a, b, c = (str(tmp_path / f"{n}.fp") for n in "abc")
    base = ["capture", "--model", "tiny", "--prompt", PROMPT, "--decode-steps", "16"]
    assert _fpmon(*base, "--out", a).returncode == 0
    assert main([*base, "--out", b]) == 0
    assert main([*base, "--dtype", "float32", "--out", c]) == 0
    same = _fpmon("compare", a, b)
    assert same.returncode == 0, same.stderr
    assert "bit-identical" in same.stdout and "keys.L0" in same.stdout
    diff = _fpmon("compare", a, c)
    assert diff.returncode == 1
    assert "DIFFERENT" in diff.stdout and "keys at layers" in diff.stdout
    assert "Traceback" not in diff.stderr


def test_compare_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, c = str(tmp_path / "a.fp"), str(tmp_path / "c.fp")
    base = ["capture", "--prompt", PROMPT, "--decode-steps", "3", "--layers", "0,2"]
    assert main([*base, "--out", a]) == 0
    assert main([*base, "--attn", "eager", "--out", c]) == 0
    capsys.readouterr()
    assert main(["compare", a, c, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    probes = {p["probe"]: p for p in out["records"][0]["probes"]}
    assert probes["keys.L0"]["identical"] and not probes["keys.L2"]["identical"]
    assert probes["keys.L2"]["max_ulp"] > 0 and probes["keys.L2"]["rel"] > 0


def _error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fpmon: error:") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.fp")
    cap = ["capture", "--prompt", PROMPT, "--out", out]
    assert "does not exist" in _error([*cap, "--model", str(tmp_path / "nope")], capsys)
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _error([*cap, "--model", str(tmp_path / "empty")], capsys)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text("{not json")
    assert "not valid JSON" in _error([*cap, "--model", str(bad)], capsys)
    assert "unknown preset" in _error([*cap, "--model", "random:gpt-9"], capsys)
    assert "out of range" in _error([*cap, "--layers", "0,99"], capsys)
    assert "--slot 4" in _error([*cap, "--batch-size", "4", "--slot", "4"], capsys)
    assert "exceeds the model's context" in _error(
        ["capture", "--prompt", "word " * 600, "--out", out], capsys
    )
    if not __import__("torch").cuda.is_available():
        assert "no CUDA" in _error([*cap, "--device", "cuda"], capsys)
    assert "no such prompts file" in _error(
        ["capture", "--prompts", str(tmp_path / "p.txt"), "--out", out], capsys
    )


def test_compare_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.fp"
    assert main(["capture", "--prompt", PROMPT, "--decode-steps", "2", "--out", str(a)]) == 0
    other = tmp_path / "o.fp"
    assert (
        main(["capture", "--prompt", "Hello there", "--decode-steps", "2", "--out", str(other)])
        == 0
    )
    capsys.readouterr()
    assert "different prompts" in _error(["compare", str(a), str(other)], capsys)
    trunc = tmp_path / "t.fp"
    trunc.write_bytes(a.read_bytes()[:100])
    assert "truncated or foreign" in _error(["compare", str(a), str(trunc)], capsys)
    foreign = tmp_path / "f.fp"
    foreign.write_text("hello")
    assert "not" in _error(["compare", str(a), str(foreign)], capsys)
    assert "no such file" in _error(["compare", str(a), str(tmp_path / "missing.fp")], capsys)
    steps = tmp_path / "s.fp"
    assert main(["capture", "--prompt", PROMPT, "--decode-steps", "3", "--out", str(steps)]) == 0
    capsys.readouterr()
    assert "shape" in _error(["compare", str(a), str(steps)], capsys)


def test_compare_different_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    from fpmon.models import tiny_folder

    folder = tmp_path / "other-model"
    shutil.copytree(tiny_folder(), folder)
    weights = load_file(str(folder / "model.safetensors"))
    weights["lm_head.weight"] = weights["lm_head.weight"] * 1.5
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    a, b = str(tmp_path / "a.fp"), str(tmp_path / "b.fp")
    assert main(["capture", "--prompt", PROMPT, "--decode-steps", "2", "--out", a]) == 0
    assert (
        main(
            [
                "capture",
                "--model",
                str(folder),
                "--prompt",
                PROMPT,
                "--decode-steps",
                "2",
                "--out",
                b,
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert "different models" in _error(["compare", a, b], capsys)


def test_capture_says_why_digests_differ_and_layers_are_skipped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two bit-identical captures: the probes digest is the same, the record digest is not,
    and the output says why in one line; the default layer list names the layer it skips."""
    base = ["capture", "--prompt", PROMPT, "--decode-steps", "2"]
    outs = []
    for name in ("a", "b"):
        capsys.readouterr()
        assert main([*base, "--out", str(tmp_path / f"{name}.fp")]) == 0
        outs.append(capsys.readouterr().out)
    lines = [{ln.split()[0]: ln for ln in out.splitlines()} for out in outs]
    probes = [ln["probes"].split()[1] for ln in lines]
    records = [ln["record"].split()[1] for ln in lines]
    assert probes[0] == probes[1] and records[0] != records[1]
    assert "request id and capture time" in lines[0]["record"]
    assert "fpmon compare" in lines[0]["record"]
    # tiny has 6 layers: 0, 1, the quarters and the last leave out layer 2, and say so.
    layers = lines[0]["layers"]
    assert layers.startswith("layers   0, 1, 3, 4, 5 of 6") and "not probed: 2" in layers
    assert "docs/lab/RESULTS.md" in layers
    capsys.readouterr()
    assert main([*base, "--layers", "0,2", "--json", "--out", str(tmp_path / "c.fp")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["layers"] == [0, 2] and summary["layers_skipped"] == [1, 3, 4, 5]
    assert not summary["records"][0]["probes_digest"].startswith(probes[0].rstrip("…"))
