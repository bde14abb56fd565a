"""One message that raises is one counted, logged fault: never the end of the agent.

The agent runs in this process (real sockets, real log, the tiny model) so a handler can be
made to raise something no frame would trigger today.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from fpmon.agents.client import submit
from fpmon.agents.config import load_config
from fpmon.agents.node import Agent
from fpmon.testing.raw import ONE_THREAD, raw_open, raw_send
from fpmon.testing.spawn import write_config


def _boom(*_: Any) -> None:
    raise RuntimeError("boom")


def test_a_raising_handler_is_counted_and_the_agent_serves_on(tmp_path, monkeypatch, tiny_engine):
    cfg = load_config(write_config(tmp_path, "iso-node", engine=ONE_THREAD))
    agent = Agent(cfg, engine=tiny_engine())
    rc: list[int] = []
    t = threading.Thread(target=lambda: rc.append(agent.run()))
    t.start()
    try:
        intake, openings = agent.endpoints["intake"], agent.endpoints["openings"]
        first = submit(intake, "before", 2, 60)
        assert first.status == "ok"

        monkeypatch.setattr(agent.reader, "get", _boom)
        o = raw_open(openings, first.seq)
        assert o is not None and o["status"] == "error" and "RuntimeError" in o["reason"]
        monkeypatch.setattr(agent, "_on_intake", _boom)
        reply = raw_send(intake, [b"submit", b"anything"])
        assert reply is not None
        body = msgpack.unpackb(reply[1], raw=False)
        assert body["status"] == "error" and "RuntimeError" in body["reason"]
        monkeypatch.undo()

        assert t.is_alive()
        assert submit(intake, "after", 2, 60).status == "ok"
        assert raw_open(openings, first.seq)["status"] == "ok"
        faults = agent.status()["faults"]
        assert faults["openings"] == {"internal:RuntimeError": 1}
        assert faults["intake"] == {"internal:RuntimeError": 1}
    finally:
        agent.stop()
        t.join(60)
    assert rc == [0]
    assert not t.is_alive()
