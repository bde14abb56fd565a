"""Hostile frames on intake and openings: rejected with a counted reason; the agent serves on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import msgpack
import pytest

from fpmon.agents.client import submit
from fpmon.testing.raw import ONE_THREAD, raw_open, raw_send
from fpmon.testing.spawn import AgentProcess, write_config

LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    cfg = write_config(d, "bad-node", engine=ONE_THREAD, security={"max_msg_bytes": LIMIT})
    with AgentProcess(cfg) as a:
        yield a


def _map(**kw):
    return msgpack.packb({"v": 1, "node": "evil", "t": time.time(), **kw}, use_bin_type=True)


# (reason it must be refused with, frames)
BAD = [
    ("malformed", [b"submit", b"\xc1\xc1\xc1"]),
    ("oversized", [b"submit", msgpack.packb({"pad": b"x" * (LIMIT + 100)})]),
    ("unknown_topic", [b"commit", _map(seq=1)]),
    ("frame_count", [b"submit"]),
    ("schema", [b"submit", _map(request_id=1, prompt="x", max_tokens=2)]),
    ("schema", [b"submit", msgpack.packb({"x": msgpack.ExtType(5, b"zz")})]),  # ext type
    ("schema", [b"submit", msgpack.packb([1, 2, 3])]),  # not a map
    ("schema", [b"submit", _map(request_id="r", prompt="x", max_tokens=2, seq=2**64 - 1)]),
]
WANT = Counter(reason for reason, _ in BAD)


def _wait_counts(agent, where: str, want: dict[str, int]) -> dict[str, int]:
    deadline = time.monotonic() + 10
    while True:
        got = agent.read_status()["rejects"][where]
        if all(got.get(k, 0) >= v for k, v in want.items()) or time.monotonic() > deadline:
            return got


def test_intake_rejects_each_reason_and_keeps_serving(agent):
    ep = agent.endpoints["intake"]
    for reason, frames in BAD:
        reply = raw_send(ep, frames)
        assert reply is not None and reply[0] == b"submitted", reason
        body = msgpack.unpackb(reply[1], raw=False)
        assert body["status"] == "rejected" and body["reason"].startswith(reason), body
    bad_tokens = raw_send(ep, [b"submit", _map(request_id="r", prompt="x", max_tokens=10**6)])
    assert msgpack.unpackb(bad_tokens[1])["reason"].startswith("bad_max_tokens")
    # Far beyond the hard cap, libzmq cuts the peer off before any decoding.
    assert raw_send(ep, [b"submit", b"x" * (8 * LIMIT)], wait_s=1) is None
    got = _wait_counts(agent, "intake", WANT)
    assert {k: got.get(k) for k in WANT} == WANT
    assert submit(ep, "still here?", 2, 60).status == "ok"


def test_openings_reject_each_reason_and_keep_serving(agent):
    ep = agent.endpoints["openings"]
    frames = [(k, [b"open" if v[0] == b"submit" else v[0], *v[1:]]) for k, v in BAD]
    for reason, f in frames:
        reply = raw_send(ep, f)
        body = msgpack.unpackb(reply[1], raw=False)
        assert body["status"] == "error" and body["reason"].startswith(reason), body
    got = _wait_counts(agent, "openings", WANT)
    assert {k: got.get(k) for k in WANT} == WANT
    r = submit(agent.endpoints["intake"], "open me", 2, 60)
    assert raw_open(ep, r.seq)["status"] == "ok"


def test_full_log_stops_taking_work_with_a_reason(tmp_path):
    cfg = write_config(
        tmp_path, "full-node", engine=ONE_THREAD, store={"hard_max_bytes": 96 * 1024}
    )
    with AgentProcess(cfg) as a:
        ep = a.endpoints["intake"]
        statuses = [submit(ep, f"fill {i} " * 20, 16, 60) for i in range(6)]
        bad = [r for r in statuses if r.status != "ok"]
        assert bad and "full" in bad[0].reason
        # Every later request is refused at the door, with the same reason.
        later = submit(ep, "one more", 2, 60)
        assert later.status == "rejected" and "full" in later.reason
        deadline = time.monotonic() + 10  # the status file is rewritten every second
        while not a.read_status()["refusing"] and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "full" in a.read_status()["refusing"]
        ok = [r.seq for r in statuses if r.status == "ok"]
        assert ok == list(range(len(ok)))  # nothing after the failure got a seq


def test_world_readable_secret_config_is_refused(tmp_path):
    from fpmon.agents.keys import keygen

    keygen(tmp_path / "keys")
    cfg = write_config(tmp_path, "n", security={"keys_dir": str(tmp_path / "keys")})
    os.chmod(cfg, 0o644)
    p = subprocess.run(
        [sys.executable, "-m", "fpmon", "agent", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "world-readable" in p.stderr and "Traceback" not in p.stderr


def test_an_agent_without_a_config_refuses_like_replay_and_hub(tmp_path):
    """No config: one line and exit 2, nothing written (it used to serve with Curve off and
    write a signing key into the working directory); `--insecure-loopback` is the way to ask."""
    said = {}
    for cmd in ("agent", "replay", "hub"):
        p = subprocess.run(
            [sys.executable, "-m", "fpmon", cmd], capture_output=True, text=True, timeout=60,
            cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])},
        )  # fmt: skip
        assert p.returncode == 2, (cmd, p.stderr)
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        said[cmd] = p.stderr
    assert all("needs --config" in x for x in said.values()), said
    assert "--insecure-loopback" in said["agent"]
    assert not list(tmp_path.iterdir())  # no state folder, no key


def test_a_vllm_server_that_is_not_there_is_refused_in_one_line(tmp_path):
    """Sidecar mode: exit 2 before serving, one line naming the key and the command to run."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    url = f"http://127.0.0.1:{port}"
    cfg = write_config(tmp_path, "n", engine={"kind": "vllm"}, vllm={"server": url})
    p = subprocess.run(
        [sys.executable, "-m", "fpmon", "agent", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    last = p.stderr.strip().splitlines()[-1]  # after the JSON log lines of the start
    assert last.startswith(f"fpmon: error: [vllm] server = '{url}': cannot reach"), last
    assert "vllm.entrypoints.openai.api_server" in last and "FpmonServerWorker" in last
