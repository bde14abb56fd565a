"""`fpmon lab run` / `lab compare` end to end on the CPU with the tiny model (reduced battery)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from fpmon.calibration import load_calibration
from fpmon.lab.cli import main

ARGS = ["--model", "tiny", "--device", "cpu", "--prompts", "4", "--prompt-len", "8",
        "--decode-steps", "3"]  # fmt: skip


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab") / "cpu"
    exps = "repeat,batch,composition,attention,dtype,streams,timing"
    assert main(["lab", "run", *ARGS, "--experiments", exps, "--out", str(out)]) == 0
    return out


def test_run_writes_summary_raw_report_plot(lab_dir):
    s = json.loads((lab_dir / "summary-main.json").read_text())
    assert s["complete"] is True
    setups = s["setups"]
    # repeats are bit-identical; attention and dtype changes move every layer after L0
    assert setups["base.r2"]["vs_ref"]["identical"] == 4
    for name in ("attn.eager", "fp16", "int8w"):
        assert setups[name]["vs_ref"]["identical"] == 0
    assert "keys.L0" not in setups["attn.eager"]["vs_ref"]["moved"]
    assert "keys.L5" in setups["attn.eager"]["vs_ref"]["moved"]
    # replay among fillers reproduces the real batch bit for bit
    assert setups["bs4.fill"]["vs_ref"]["identical"] == 4
    # GPU-only work is skipped with its reason, the rest ran
    assert "CUDA" in s["skipped"]["streams"]
    assert "CUDA" in s["skipped"]["sdpa.flash"]
    assert "CUDA" in s["skipped"]["timing"]
    assert s["checks"]["capture_path"]["replay_identical"] == 4
    for f in ("report-main.md", "plot-main.png", "log-main.txt"):
        assert (lab_dir / f).stat().st_size > 0
    assert list(lab_dir.glob("raw-main-*.bin"))


def test_nothing_overwritten_without_force(lab_dir, capsys):
    assert main(["lab", "run", *ARGS, "--experiments", "repeat", "--out", str(lab_dir)]) == 2
    assert "--force" in capsys.readouterr().err


def test_compare_same_folder_and_copy(lab_dir, tmp_path):
    cal = tmp_path / "cal.json"
    rep = tmp_path / "rep.md"
    assert main(["lab", "compare", str(lab_dir), str(lab_dir), "--out", str(cal),
                 "--report", str(rep)]) == 0  # fmt: skip
    doc = load_calibration(cal)
    pair = doc["pairs"]["cpu|cpu"]
    assert pair["bit_exact"] is True
    assert pair["layers"]["keys.L3"]["max_rel"] == 0.0
    assert pair["detection"]["attn.eager"] == 1.0
    assert pair["detector"]["false_positives"] == 0
    assert rep.with_suffix(".png").stat().st_size > 0
    assert "Cross matrix" in rep.read_text()
    # a second folder of the same model: cross mode, both orders written
    other = tmp_path / "other"
    shutil.copytree(lab_dir, other)
    cal2 = tmp_path / "cal2.json"
    assert main(["lab", "compare", str(lab_dir), str(other), "--out", str(cal2)]) == 0
    assert load_calibration(cal2)["pairs"]["cpu|cpu"]["honest_pairs"] > 4
    # --merge adds another calibration's pairs (same weights only)
    doc["pairs"] = {"gpuX|gpuY": doc["pairs"]["cpu|cpu"]}
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps(doc))
    cal3 = tmp_path / "cal3.json"
    assert main(["lab", "compare", str(lab_dir), str(lab_dir), "--out", str(cal3),
                 "--merge", str(extra)]) == 0  # fmt: skip
    assert set(load_calibration(cal3)["pairs"]) == {"cpu|cpu", "gpuX|gpuY"}
    doc["weights_digest"] = "0" * 64
    extra.write_text(json.dumps(doc))
    assert main(["lab", "compare", str(lab_dir), str(lab_dir), "--out", str(cal3), "--force",
                 "--merge", str(extra)]) == 2  # fmt: skip


def test_compare_refuses_other_weights(lab_dir, tmp_path, capsys):
    other = tmp_path / "w"
    shutil.copytree(lab_dir, other)
    p = other / "summary-main.json"
    s = json.loads(p.read_text())
    s["meta"]["weights_digest"] = "0" * 64
    p.write_text(json.dumps(s))
    assert main(["lab", "compare", str(lab_dir), str(other), "--out", str(tmp_path / "c")]) == 2
    assert "same model and weights" in capsys.readouterr().err


def test_skip_names_checked_before_loading(tmp_path, capsys):
    assert main(["lab", "run", "--skip", "sdpa.nope", "--out", str(tmp_path / "s")]) == 2
    assert "--skip sdpa.nope" in capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path):
    def fpmon(*a):
        return subprocess.run(
            [sys.executable, "-m", "fpmon.lab", "lab", *a], capture_output=True, text=True
        )

    r = fpmon("run", "--experiments", "nope", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "unknown experiment 'nope'" in r.stderr
    r = fpmon("run", "--device", "cuda", "--out", str(tmp_path / "y"))
    assert r.returncode == 2 and "no CUDA device" in r.stderr and "Traceback" not in r.stderr
    r = fpmon("run", "--model", "random:nope", "--out", str(tmp_path / "z"))
    assert r.returncode == 2 and "unknown preset" in r.stderr
    r = fpmon("compare", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "c.json"))
    assert r.returncode == 2 and "summary" in r.stderr


def test_sweep_every_layer_with_cut_keys(tmp_path):
    out = tmp_path / "sweep"
    argv = ["lab", "run", *ARGS, "--experiments", "repeat,attention,dtype", "--skip", "int8w",
            "--layers", "all", "--keys-keep", "16", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    s = json.loads((out / "summary-main.json").read_text())
    assert s["meta"]["probes"]["layers"] == [0, 1, 2, 3, 4, 5] and s["meta"]["keys_keep"] == 16
    from fpmon.lab.results import load_results

    r = load_results(out)
    e = r.entries["base"][0]
    assert e.probes["keys.L3"].shape[-1] == 16  # kept raw: 16 dims; the digest covers all
    assert r.entries["base.r2"][0].identical_to(e)
    js = tmp_path / "sweep.json"
    assert main(["lab", "sweep", str(out), "--json", str(js), "--proxy", ""]) == 0
    res = json.loads(js.read_text())
    assert res["probes"][:6] == [f"keys.L{i}" for i in range(6)]
    assert res["noise"]["keys.L1"]["max"] == 0  # the repeat is bit-exact
    eager = res["changes"]["attn.eager"]
    # attention cannot move layer 0's keys (they precede it); layer 1 is the first that moves
    assert eager["first_moved"] == "keys.L1" and eager["probes"]["keys.L0"]["ratio"] == 0
    assert eager["probes"]["keys.L1"]["rate"] == 1.0
    assert res["changes"]["fp16"]["first_moved"] == "keys.L0"


def test_layers_option_checked(tmp_path, capsys):
    assert main(["lab", "run", *ARGS, "--layers", "0,99", "--out", str(tmp_path / "l")]) == 2
    assert "--layers 99" in capsys.readouterr().err
    assert main(["lab", "run", *ARGS, "--layers", "x", "--out", str(tmp_path / "m")]) == 2
