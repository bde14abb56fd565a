"""With a hub configured, the agent's PUB connects to the hub's XSUB; subscribers use its XPUB."""

from __future__ import annotations

import threading

import zmq

from fpmon.agents.client import submit
from fpmon.testing.raw import ONE_THREAD, RawSubscriber, check_chain
from fpmon.testing.spawn import AgentProcess, write_config


def test_agent_publishes_through_a_zmq_proxy_hub(tmp_path):
    ctx = zmq.Context()
    xsub, xpub = ctx.socket(zmq.XSUB), ctx.socket(zmq.XPUB)
    xsub_port = xsub.bind_to_random_port("tcp://127.0.0.1")
    xpub_port = xpub.bind_to_random_port("tcp://127.0.0.1")
    ctrl_in, ctrl = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    ctrl_in.bind("inproc://hub-ctrl")
    ctrl.connect("inproc://hub-ctrl")

    def run_hub() -> None:
        zmq.proxy_steerable(xsub, xpub, None, ctrl_in)
        for s in (xsub, xpub, ctrl_in):
            s.close(0)

    hub = threading.Thread(target=run_hub, daemon=True)
    hub.start()
    cfg = write_config(
        tmp_path, "hub-node", engine=ONE_THREAD, endpoints={"hub": f"tcp://127.0.0.1:{xsub_port}"}
    )
    try:
        with AgentProcess(cfg) as a:
            assert a.endpoints["publish"] == f"tcp://127.0.0.1:{xsub_port}"
            sub = RawSubscriber(f"tcp://127.0.0.1:{xpub_port}")
            sub.pump(lambda s: s["telemetry"])
            r = submit(a.endpoints["intake"], "through the hub", 2, 60)
            sub.pump(lambda s: s["commit"])
            sub.close()
        assert sub.seen["commit"][0]["seq"] == r.seq == 0
        check_chain(sub.seen["commit"])
    finally:
        ctrl.send(b"TERMINATE")
        hub.join(5)
        ctrl.close(0)
        ctx.term()
