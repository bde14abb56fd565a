"""The feed worker on real sockets: decode under limits, counted rejects, record and play back
with seek; `fpmon snapshot --json` against a real ROUTER; bad CLI input is one line, exit 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fpmon.monitor.feed import EndpointState, Feed, Inbox, Player, Position, Rejected, Reset
from fpmon.monitor.model import FleetModel
from fpmon.testing import synth
from fpmon.wire import StateReply, encode


def test_feed_decodes_counts_rejects_and_records(tmp_path, collect):
    pub = synth.Publisher()
    rec = tmp_path / "feed.fprec"
    inbox = Inbox()
    feed = Feed(inbox, [pub.endpoint], record=str(rec))
    feed.start()
    try:
        got = collect(inbox, lambda g: (pub.send(synth.telemetry("a")), any(
            isinstance(x, EndpointState) and x.state == "live" for x in g
        ) and any(getattr(x, "node", "") == "a" for x in g))[1])  # fmt: skip
        pub.sock.send_multipart([b"verdict", b"\xc1 not msgpack"])
        pub.sock.send_multipart([b"telemetry", b"\x81\xa1v\x01"])  # schema: node missing
        for i in range(5):
            pub.send(synth.commit("a", i))
        got = collect(inbox, lambda g: sum(getattr(x, "TOPIC", "") == "commit" for x in g) == 5)
        reasons = sorted(x.reason for x in got if isinstance(x, Rejected))
        assert reasons == ["malformed", "schema"]
    finally:
        feed.stop()
        pub.close()
    # Play it back: the same messages, in order; seek back resets, seek forward fast-forwards.
    inbox = Inbox()
    player = Player(inbox, rec, speed=50.0)
    player.start()
    try:
        got = collect(inbox, lambda g: sum(getattr(x, "TOPIC", "") == "commit" for x in g) == 5)
        m = FleetModel()
        m.apply_many(x for x in got if hasattr(x, "TOPIC"))
        assert m.nodes["a"].commits == 5
        player.seek(0.0)
        got = collect(inbox, lambda g: any(isinstance(x, Reset) for x in g))
        assert any(isinstance(x, Position) for x in got)
    finally:
        player.stop()


def test_recording_must_be_a_recording(tmp_path):
    from fpmon.errors import FpmonError
    from fpmon.monitor.feed import read_recording

    bad = tmp_path / "x.bin"
    bad.write_bytes(b"hello")
    with pytest.raises(FpmonError, match="not an fpmon feed recording"):
        read_recording(bad)


def fpmon(*args: str, timeout: float = 60, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fpmon", *args], capture_output=True, text=True, timeout=timeout,
        env=env,
    )  # fmt: skip


def test_snapshot_json_against_a_real_state_endpoint():
    v = synth.verdict("n1", 4, "mismatch", "dtype", "bfloat16")
    server = synth.StateServer(
        StateReply(node="replay", t=0.0, nodes={"n1": {"commits": 9}}, verdicts=[v.to_map()])
    )
    try:
        out = fpmon("snapshot", "--json", "--state", server.endpoint)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    (node,) = data["nodes"]
    assert node["node"] == "n1" and node["health"] == "flagged"
    assert node["attributions"] == {"dtype": 1} and node["commits"] == 9


def test_snapshot_json_as_the_readme_writes_it_finds_the_running_demo(tmp_path):
    """README: `fpmon snapshot --json`, no endpoint: the running `fpmon demo` left its monitor
    config under $XDG_RUNTIME_DIR/fpmon/demos/<pid>.toml; one whose process is gone is not
    used. Without a demo it says what to give, in one line."""
    env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path)}
    out = fpmon("snapshot", "--json", env=env)
    assert out.returncode == 2 and "none is running" in out.stderr, out.stderr
    v = synth.verdict("n1", 4, "mismatch", "dtype", "bfloat16")
    server = synth.StateServer(
        StateReply(node="replay", t=0.0, nodes={"n1": {"commits": 9}}, verdicts=[v.to_map()])
    )
    demos = tmp_path / "fpmon" / "demos"
    demos.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    (demos / f"{dead}.toml").write_text('[monitor]\nstate = "tcp://127.0.0.1:1"\n')
    (demos / f"{os.getpid()}.toml").write_text(f'[monitor]\nstate = "{server.endpoint}"\n')
    try:
        out = fpmon("snapshot", "--json", env=env)
    finally:
        server.close()
    assert out.returncode == 0, out.stderr
    (node,) = json.loads(out.stdout)["nodes"]
    assert node["node"] == "n1" and node["commits"] == 9
    assert not (demos / f"{dead}.toml").exists()  # a demo that is gone is forgotten


def test_bad_inputs_are_one_clear_line(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text('[monitor]\nendpoints = ["tcp://127.0.0.1:1"]\ntheme = "neon"\n')
    cases = [
        (("--config", str(cfg)), "unknown theme 'neon'"),
        (("--config", str(tmp_path / "none.toml")), "no such config file; start from deploy/"),
        (("dashboard", "--endpoint", "nonsense"), "not a ZeroMQ endpoint"),
        (("snapshot", "--state", "tcp://127.0.0.1:1", "--timeout", "0.3"), "no answer"),
    ]
    bad_keys = tmp_path / "k.toml"
    bad_keys.write_text('[monitor]\nendpoints = ["tcp://127.0.0.1:1"]\n[keymap]\nflete = "f"\n')
    cases.append((("--config", str(bad_keys)), "unknown binding id(s) flete"))
    curve = tmp_path / "c.toml"
    curve.write_text(f'[curve]\nserver_key = "{"x" * 40}"\nclient_keys = "{tmp_path}/no.key"\n')
    cases.append((("--config", str(curve)), "names secrets ([curve] client_keys)"))
    private = tmp_path / "p.toml"
    private.write_text(curve.read_text())
    private.chmod(0o600)
    cases.append((("--config", str(private)), "[curve] client_keys: "))
    for args, words in cases:
        out = fpmon(*args)
        assert out.returncode == 2, (args, out.stdout, out.stderr)
        assert words in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_feed_over_curve(tmp_path, curve_cert, collect):
    """Outside loopback the monitor is a CurveZMQ client: config from a zmq.auth certificate,
    messages arrive encrypted; a client without the server's key gets nothing."""
    import zmq
    import zmq.auth

    from fpmon.monitor.config import parse_config

    server_pub, server_sec = zmq.curve_keypair()
    _, client_secret_file = curve_cert(tmp_path, "monitor")
    cfg = parse_config(
        {"curve": {"server_key": server_pub.decode(), "client_keys": str(client_secret_file)}}
    )
    ctx = zmq.Context.instance()
    pub = ctx.socket(zmq.PUB)
    pub.linger = 0
    pub.curve_server = True
    pub.curve_secretkey = server_sec
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    ep = f"tcp://127.0.0.1:{port}"
    good, plain = Inbox(), Inbox()
    feeds = [Feed(good, [ep], curve=cfg.curve), Feed(plain, [ep])]
    for f in feeds:
        f.start()
    try:

        def arrived(g):
            pub.send_multipart(encode(synth.telemetry("secret-node")))
            return any(getattr(x, "node", "") == "secret-node" for x in g)

        collect(good, arrived)
        got = plain.drain()
        assert not any(getattr(x, "node", "") == "secret-node" for x in got)
    finally:
        for f in feeds:
            f.stop()
        pub.close(0)


def test_a_deaf_feed_shows_it_and_resubscribes(collect):
    """An oversized frame kills the SUB's connection for good (libzmq does not reconnect after
    a protocol error): the feed notices the silence, says so, and makes a new SUB."""
    from fpmon.wire import Limits

    pub = synth.Publisher()
    inbox = Inbox()
    feed = Feed(inbox, [pub.endpoint], deaf_after_s=1.0)
    feed.start()
    try:
        collect(inbox, lambda g: (pub.send(synth.telemetry("a")), any(
            getattr(x, "node", "") == "a" for x in g))[1])  # fmt: skip
        pub.sock.send_multipart([b"telemetry", b"\x00" * (Limits().max_bytes + 8192)])
        time.sleep(0.2)

        def deaf_then_heard(g):
            pub.send(synth.telemetry("b"))
            states = [x.state for x in g if isinstance(x, EndpointState)]
            return "deaf" in states and any(getattr(x, "node", "") == "b" for x in g)

        got = collect(inbox, deaf_then_heard, timeout=15)
        states = [x.state for x in got if isinstance(x, EndpointState)]
        assert states[states.index("deaf") :][-1] == "live"  # heard again after resubscribing
    finally:
        feed.stop()
        pub.close()
