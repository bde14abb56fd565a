"""CurveZMQ on: allowlisted keys get in, others are refused at the handshake and counted."""

from __future__ import annotations

import hashlib
import shutil
import time

import pytest
import zmq
import zmq.auth

from fpmon import manifest
from fpmon.agents.client import submit
from fpmon.agents.keys import keygen
from fpmon.errors import FpmonError
from fpmon.records import Record
from fpmon.testing.raw import ONE_THREAD, RawSubscriber, raw_open
from fpmon.testing.spawn import AgentProcess, write_config


def _curve(d, name: str, server_pub: bytes) -> dict[str, bytes]:
    pub, secret = zmq.auth.load_certificate(str(d / f"{name}.key_secret"))
    return {"curve_publickey": pub, "curve_secretkey": secret, "curve_serverkey": server_pub}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("curve")
    keygen(d / "keys")
    for who in ("client", "verifier", "stranger"):
        zmq.auth.create_certificates(str(d), who)
    for who, folder in (("client", "clients"), ("verifier", "verifiers")):
        (d / folder).mkdir()
        shutil.copy(d / f"{who}.key", d / folder)
    cfg = write_config(
        d,
        "curve-node",
        engine=ONE_THREAD,
        security={
            "curve": True,
            "keys_dir": str(d / "keys"),
            "clients_dir": str(d / "clients"),
            "verifiers_dir": str(d / "verifiers"),
        },
    )
    server_pub, _ = zmq.auth.load_certificate(str(d / "keys" / "agent.key"))
    with AgentProcess(cfg) as a:
        yield a, d, server_pub


def test_allowlisted_client_and_verifier_work_over_curve(setup):
    a, d, server_pub = setup
    sub = RawSubscriber(a.endpoints["publish"], _curve(d, "stranger", server_pub))
    try:
        sub.pump(lambda s: s["telemetry"])
        r = submit(
            a.endpoints["intake"],
            "hello",
            2,
            60,
            curve=(str(d / "client.key_secret"), str(d / "keys" / "agent.key")),
        )
        assert r.status == "ok"
        sub.pump(lambda s: s["commit"])
    finally:
        sub.close()
    o = raw_open(a.endpoints["openings"], r.seq, _curve(d, "verifier", server_pub))
    assert hashlib.sha256(o["record"]).digest() == sub.seen["commit"][0]["record_digest"]
    # The record binds the request to the Curve key ZAP authenticated for it (its manifest row).
    rec = Record.decode(o["record"])
    client_pub, _ = zmq.auth.load_certificate(str(d / "client.key"))
    assert rec.request is not None and rec.request.client == client_pub.decode()
    assert rec.manifest == (manifest.row_for(rec.request_id, rec.request),)
    assert sub.seen["commit"][0]["manifest"] == manifest.root(rec.manifest)


def test_unauthenticated_peers_are_refused_and_counted(setup):
    a, d, server_pub = setup
    with pytest.raises(FpmonError, match="no reply"):
        submit(
            a.endpoints["intake"],
            "let me in",
            2,
            2,
            curve=(str(d / "stranger.key_secret"), str(d / "keys" / "agent.key")),
        )
    with pytest.raises(FpmonError, match="no reply"):
        submit(a.endpoints["intake"], "no curve at all", 2, 2)
    # A submitter's key is not a verifier's: openings stay closed to it.
    assert raw_open(a.endpoints["openings"], 0, _curve(d, "client", server_pub), 2) is None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        denied = a.read_status()["auth_denied"]
        if denied.get("intake:unauthenticated") and denied.get("openings:unauthenticated"):
            break
        time.sleep(0.2)
    assert denied.get("intake:unauthenticated", 0) >= 1
    assert denied.get("openings:unauthenticated", 0) >= 1
    r = submit(
        a.endpoints["intake"],
        "still serving",
        2,
        60,
        curve=(str(d / "client.key_secret"), str(d / "keys" / "agent.key")),
    )
    assert r.status == "ok"


def test_empty_allowlist_folder_is_refused(tmp_path):
    keygen(tmp_path / "keys")
    (tmp_path / "empty").mkdir()
    cfg = write_config(
        tmp_path,
        "n",
        security={
            "curve": True,
            "keys_dir": str(tmp_path / "keys"),
            "clients_dir": str(tmp_path / "empty"),
            "verifiers_dir": str(tmp_path / "empty"),
        },
    )
    with pytest.raises(FpmonError, match=r"no public keys"):
        AgentProcess(cfg).start()
