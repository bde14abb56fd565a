"""The daemon as a process and through the hub: CLI, SIGTERM, restart, garbage, state, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import zmq

from fpmon import tomlw
from fpmon.replay import config
from fpmon.replay.daemon import ReplayDaemon
from fpmon.replay.hub import ForwarderConfig, Hub, HubConfig, HubCurveConfig
from fpmon.replay.store import Store
from fpmon.testing.fleet import (
    ProverNode,
    daemon_doc,
    read_verdicts,
    wait_subscribed,
    wait_verdicts,
)
from fpmon.wire import Commit, GpuProcess, GpuSample, StateRequest, decode, encode

pytestmark = pytest.mark.timeout(180)
ROOT = Path(__file__).resolve().parents[2]


def start(cfg, factory):
    d = ReplayDaemon(cfg, engine_factory=factory)
    d.start()
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    return d, t


def stop(d, t):
    d.stop()
    t.join(timeout=60)
    assert not t.is_alive()


def test_cli_process_verifies_stops_on_sigterm_and_lists_verdicts(
    tmp_path: Path, tiny_engine
) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    commits = [node.make(e, e.encode(f"request number {i}")) for i in range(3)]
    doc = daemon_doc(tmp_path, [node])
    doc["replay"]["state"] = "ipc://" + str(tmp_path / "state.sock")
    cfg_path = tmp_path / "replay.toml"
    tomlw.write(cfg_path, doc)  # private: it names the sampling key
    env = {**os.environ, "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fpmon", "replay", "--config", str(cfg_path)],
        cwd=ROOT,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        ctx = zmq.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(doc["replay"]["state"])
        seen = False
        deadline = time.monotonic() + 60
        while not seen and time.monotonic() < deadline:  # until it hears the node
            node.telemetry()
            dealer.send_multipart(encode(StateRequest(node="t", t=time.time())))
            if dealer.poll(200):
                reply = decode(dealer.recv_multipart(), expect=("state",))
                seen = reply.nodes["n1"].last_telemetry_t > 0
        assert seen
        for c in commits:
            node.publish(c)
        got = wait_verdicts(tmp_path / "replay.sqlite", 3, timeout=90)
        assert [v["status"] for v in got] == ["match"] * 3
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        node.close()

    def verdicts_cli(*extra: str) -> subprocess.CompletedProcess:
        argv = [sys.executable, "-m", "fpmon", "replay", "verdicts", "--config", str(cfg_path)]
        return subprocess.run([*argv, *extra], cwd=ROOT, env=env, capture_output=True, text=True)

    out = verdicts_cli("--since", "1h", "--node", "n1", "--json")
    assert out.returncode == 0, out.stderr
    listed = json.loads(out.stdout)
    assert [(v["seq"], v["status"]) for v in listed] == [(0, "match"), (1, "match"), (2, "match")]
    table = verdicts_cli("--status", "match")
    assert table.stdout.count("match") == 3 and "3 verdict(s)" in table.stderr
    bad = verdicts_cli("--since", "yesterday")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_restart_resumes_pending_work_without_duplicates(
    tmp_path: Path, tiny_engine, shared_engines
) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    commits = [node.make(e, e.encode(f"prompt {i}")) for i in range(4)]
    node.silent = True  # openings pending when the daemon goes down
    doc = daemon_doc(tmp_path, [node], openings={"deadline_s": 30.0, "retries": 0})
    cfg = config.parse(tmp_path / "replay.toml", doc)
    d, t = start(cfg, shared_engines)
    wait_subscribed([node], d)
    node.silent = False
    node.publish(commits[0])
    assert [v["seq"] for v in wait_verdicts(cfg.replay.store, 1)] == [0]
    node.silent = True
    for c in commits[1:]:
        node.publish(c)
    deadline = time.monotonic() + 20
    while len(d.opener.pending) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop(d, t)
    # A replay that was opened but not judged when the daemon died is resumed too.
    store = Store(cfg.replay.store)
    assert {c.seq for c, stage, _ in store.pending()} == {1, 2, 3}
    store.set_opened("n1", 3, node.records[3])
    store.close()
    node.silent = False
    d, t = start(cfg, shared_engines)
    got = wait_verdicts(cfg.replay.store, 4)
    time.sleep(0.5)
    stop(d, t)
    got = read_verdicts(cfg.replay.store)
    assert sorted(v["seq"] for v in got) == [0, 1, 2, 3]  # each once
    assert {v["status"] for v in got} == {"match"}
    node.close()


def test_hub_forwards_and_garbage_costs_a_counted_reason(
    tmp_path: Path, tiny_engine, shared_engines, wait_alert
) -> None:
    hub = Hub(HubConfig(hub=ForwarderConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0")))
    hub.start()
    nodes = [ProverNode(f"h{i}", hub_xsub=hub.endpoints["xsub"]) for i in range(2)]
    e = tiny_engine("bfloat16", "sdpa")
    commits = {n.name: [n.make(e, e.encode("through the hub")) for _ in range(2)] for n in nodes}
    doc = daemon_doc(tmp_path, nodes, replay={"hub": hub.endpoints["xpub"], "metrics_port": 0})
    cfg = config.parse(tmp_path / "replay.toml", doc)
    d, t = start(cfg, shared_engines)
    try:
        wait_subscribed(nodes, d)
        for n in nodes:
            for c in commits[n.name]:
                n.publish(c)
        # An impostor on the hub publishes a commit under h0's name with its own chain and
        # signs a head with its own key. Nothing h0 signed says seq 2 exists, and h0's own log
        # (asked for the hole) ends at 1: the impostor's words are spoofing, not h0's break.
        impostor = ProverNode("h0", hub_xsub=hub.endpoints["xsub"])
        time.sleep(0.3)
        forged = impostor.make(e, e.encode("forged"))
        forged = Commit(**{**forged.to_map(), "seq": 2})
        impostor.publish(forged)
        # Garbage: not msgpack, an unknown node, an oversized frame.
        for frames in ([b"commit", b"\xc1\xc1"], [b"telemetry", b"\x93\x01\x02\x03"]):
            nodes[0].pub.send_multipart(frames)
        wait_verdicts(cfg.replay.store, 4, timeout=60)
        spoof = wait_alert(d, "spoofed")
        assert spoof["node"] == "h0" and "target, not the suspect" in spoof["message"]
        deadline = time.monotonic() + 20  # the held commit waits for h0's log to deny it
        while d.intake.stats["h0"].spoofed < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        by = {(v["node"], v["seq"]): v for v in read_verdicts(cfg.replay.store)}
        assert [by[(n.name, s)]["status"] for n in nodes for s in (0, 1)] == ["match"] * 4
        assert ("h0", 2) not in by and d.intake.stats["h0"].spoofed >= 2  # commit and head
        assert "chain_break" not in {v["status"] for v in by.values()}
        rejects = d.intake.rejects
        assert rejects["malformed"] == 1 and rejects["schema"] == 1
        impostor.close()
    finally:
        stop(d, t)
        for n in nodes:
            n.close()
        hub.stop()


def test_state_router_and_metrics(tmp_path: Path, tiny_engine, shared_engines) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    c = node.make(e, e.encode("metrics"))
    sock = socket_port()
    doc = daemon_doc(tmp_path, [node], replay={"metrics_port": sock})
    cfg = config.parse(tmp_path / "replay.toml", doc)
    d, t = start(cfg, shared_engines)
    try:
        wait_subscribed([node], d)
        node.publish(c)
        wait_verdicts(cfg.replay.store, 1)
        ctx = zmq.Context.instance()
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(d.endpoints["state"])
        dealer.send_multipart([b"state?", b"\x00garbage"])  # rejected, counted, no reply
        dealer.send_multipart(encode(StateRequest(node="mon", t=time.time())))
        assert dealer.poll(5000)
        reply = decode(dealer.recv_multipart(), expect=("state",))
        assert reply.nodes["n1"].verdicts == {"match": 1}
        assert reply.verdicts[0].status == "match" and reply.stream_seq >= 1
        assert d.state_rejects["schema"] == 1  # an integer where a map belongs
        # A head that fails n1's pinned key, for a seq already judged `match`: no second
        # verdict and no break (anyone could send it), but a spoofing alert.
        h = node.head_for(c)
        node.pub.send_multipart(encode(type(h)(**{**h.to_map(), "sig": bytes(64)})))
        deadline = time.monotonic() + 10
        kinds: list[str] = []
        while "spoofed" not in kinds and time.monotonic() < deadline:
            time.sleep(0.5)  # within the state endpoint's rate limit (2/s)
            dealer.send_multipart(encode(StateRequest(node="mon", t=time.time())))
            assert dealer.poll(5000)
            later = decode(dealer.recv_multipart(), expect=("state",))
            kinds = [a.kind for a in later.alerts]
        assert "spoofed" in kinds and "chain_break" not in kinds
        assert later.nodes["n1"].verdicts == {"match": 1}
        dealer.close()
        time.sleep(1.2)  # one tick publishes gauges
        body = urllib.request.urlopen(f"http://127.0.0.1:{sock}/metrics", timeout=5).read()
        text = body.decode()
        assert 'fpmon_replay_verdicts_total{status="match"} 1.0' in text
        assert 'fpmon_replay_coverage{node="n1"} 1.0' in text
        assert "fpmon_replay_queue_depth 0.0" in text
    finally:
        stop(d, t)
        node.close()


def socket_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_garbage_flood_and_shedding_are_alerts_never_silent(
    tmp_path: Path, tiny_engine, shared_engines, wait_alert
) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    commits = [node.make(e, e.encode(f"shed me {i}")) for i in range(6)]
    doc = daemon_doc(
        tmp_path,
        [node],
        limits={"flood_rejects_per_min": 10},
        openings={"max_inflight": 1},
        queue={"max": 1},
    )
    d, t = start(config.parse(tmp_path / "replay.toml", doc), shared_engines)
    try:
        wait_subscribed([node], d)
        for _ in range(200):
            node.pub.send_multipart([b"commit", b"\xc1"])
        flood = wait_alert(d, "flood")
        assert flood["node"] == "n1" and flood["details"]["rejects"]["malformed"] >= 100
        for c in commits:
            node.publish(c, head=False)  # verified through the links the daemon asks for
        shed = wait_alert(d, "shed")
        assert shed["details"]["shed"] >= 1
        assert d.summary()["n1"].shed >= 1
    finally:
        stop(d, t)
        node.close()


def test_a_live_node_that_never_signs_its_commits_is_flagged_unsigned(
    tmp_path: Path, tiny_engine, shared_engines, wait_alert
) -> None:
    node = ProverNode("n1")
    e = tiny_engine("bfloat16", "sdpa")
    commits = [node.make(e, e.encode(f"unsigned {i}")) for i in range(3)]
    doc = daemon_doc(tmp_path, [node], limits={"head_timeout_s": 2.0})
    d, t = start(config.parse(tmp_path / "replay.toml", doc), shared_engines)
    try:
        wait_subscribed([node], d)
        node.publish(commits[0])  # signed: anchors the chain
        wait_verdicts(d.cfg.replay.store, 1)
        node.silent = True  # answers nothing on its openings channel, not even links
        for c in commits[1:]:
            node.publish(c, head=False)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and d.intake.chains.nodes["n1"].seq < 2:
            node.telemetry()  # up and talking
            time.sleep(0.1)
        unsigned = None
        while unsigned is None and time.monotonic() < deadline:
            node.telemetry()
            try:
                unsigned = wait_alert(d, "unsigned", timeout=0.5)
            except AssertionError:
                continue
        assert unsigned is not None and "while the node is up" in unsigned["message"]
        assert unsigned["severity"] == "warning"
    finally:
        stop(d, t)
        node.close()


def test_curve_hub_admits_allowlisted_publishers_only(
    tmp_path: Path, tiny_engine, curve_cert, shared_engines
) -> None:
    import shutil

    import zmq.auth

    for who in ("hub", "daemon", "h0", "h1"):
        curve_cert(str(tmp_path), who)
    for folder, members in (("pubs", ("daemon", "h0")), ("subs", ("daemon",))):
        (tmp_path / folder).mkdir()
        for m in members:
            shutil.copy(tmp_path / f"{m}.key", tmp_path / folder)
    hub = Hub(
        HubConfig(
            hub=ForwarderConfig(xsub="tcp://127.0.0.1:0", xpub="tcp://127.0.0.1:0"),
            curve=HubCurveConfig(
                secret_file=tmp_path / "hub.key_secret",
                publishers_dir=tmp_path / "pubs",
                subscribers_dir=tmp_path / "subs",
                verifiers=("daemon",),
            ),
        )
    )
    hub.start()
    hub_pub, _ = zmq.auth.load_certificate(str(tmp_path / "hub.key"))

    def keys(who: str) -> tuple[str, bytes, bytes]:
        pub, secret = zmq.auth.load_certificate(str(tmp_path / f"{who}.key_secret"))
        return hub_pub.decode(), pub, secret

    nodes = [ProverNode(n, hub_xsub=hub.endpoints["xsub"], hub_curve=keys(n)) for n in ("h0", "h1")]
    e = tiny_engine("bfloat16", "sdpa")
    commits = [n.make(e, e.encode("sealed hub")) for n in nodes]
    doc = daemon_doc(
        tmp_path,
        nodes,
        replay={
            "hub": hub.endpoints["xpub"],
            "hub_xsub": hub.endpoints["xsub"],
            "hub_curve_pubkey": hub_pub.decode(),
            "curve_secret_file": str(tmp_path / "daemon.key_secret"),
            "state_clients_dir": str(tmp_path / "subs"),
        },
    )
    d, t = start(config.parse(tmp_path / "replay.toml", doc), shared_engines)
    try:
        wait_subscribed(nodes[:1], d)
        for n, c in zip(nodes, commits, strict=True):
            n.telemetry()
            n.publish(c)
        got = wait_verdicts(d.cfg.replay.store, 1, timeout=60)
        time.sleep(1.0)
        assert [(v["node"], v["status"]) for v in read_verdicts(d.cfg.replay.store)] == [
            ("h0", "match")
        ]
        assert d.intake.stats["h1"].commits == 0 and d.intake.stats["h1"].last_telemetry_t == 0
        assert got
    finally:
        stop(d, t)
        for n in nodes:
            n.close()
        hub.stop()


def test_slow_commits_and_unexplained_gpu_busy_time_raise_alerts(
    tmp_path: Path, tiny_engine, shared_engines, wait_alert
) -> None:
    node = ProverNode("busy")
    e = tiny_engine("bfloat16", "sdpa")
    commits = []
    for i in range(4):
        c = node.make(e, e.encode(f"hidden work {i}"))
        # Five times the time the declared work takes: something else shares the device.
        commits.append(
            Commit(
                **{
                    **c.to_map(),
                    "prefill_s": c.prefill_s * 5 + 0.05,
                    "decode_s": c.decode_s * 5 + 0.05,
                }
            )
        )
    doc = daemon_doc(
        tmp_path, [node], timing={"min_samples": 3, "margin": 0.5, "capacity_window_s": 2.0}
    )
    d, t = start(config.parse(tmp_path / "replay.toml", doc), shared_engines)
    try:
        wait_subscribed([node], d)
        for c in commits:
            node.publish(c)
        wait_verdicts(d.cfg.replay.store, 4)
        hidden = wait_alert(d, "suspected_hidden_work")
        assert hidden["details"]["direction"] == "slower" and hidden["details"]["median_ratio"] > 2
        assert "no interference profile" in hidden["details"]["explained_by"]
        assert "Blind spot" in hidden["message"]
        # No accounting window judged yet: time alone cannot tell GPU work from a busy host.
        assert hidden["details"]["likely_cause"] == "unknown"
        # The node's GPU (as its telemetry reports it) is fully busy, far beyond 4 requests,
        # and holds a compute process that is not its engine's.
        procs = [
            GpuProcess(pid=10, used_memory=3e9, name="python3", engine=True),
            GpuProcess(pid=11, used_memory=8e8, name="miner", engine=False),
        ]
        for _ in range(20):  # 4 s of telemetry: two capacity windows
            node.telemetry(gpus=[GpuSample(index=0, uuid="GPU-x", util=100, processes=procs)])
            time.sleep(0.2)
        capacity = wait_alert(d, "undeclared_capacity")
        util = capacity["details"]["metrics"]["util"]
        assert util["observed_s"] > util["explained_s"] and util["over"]
        assert capacity["details"]["gpus"] == ["GPU-x"]
        # The reference is this CPU: no GPM there, so GPM metrics are not judged, and it says so.
        assert "sm_util" in capacity["details"]["not_judged"]
        foreign = wait_alert(d, "foreign_process")
        assert foreign["details"]["pid"] == 11 and "miner" in foreign["message"]
        assert d.summary()["busy"].capacity.startswith("checked: 1 GPU(s)")
        # ... and typed, for the monitor's hidden-work column (NodeSummary.accounting).
        w = d.summary()["busy"].accounting
        assert w is not None and [m.metric for m in w.metrics] == ["util"]
        assert "sm_util" in w.not_judged and w.gpus == 1
    finally:
        stop(d, t)
        node.close()
