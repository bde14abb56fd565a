"""Sidecar mode's refusals before serving: each one line naming `[vllm] server` and what to run.

The served path itself (a real `vllm serve`, an agent forwarding to it, records replayed by a
real verifier) is `tests/functional/test_vllm_engine.py`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fpmon.agents.config import AgentConfig, EngineConfig, VllmConfig
from fpmon.agents.sidecar import connect
from fpmon.engines.vllm.attach import PLUGIN_FLAGS, serve_command
from fpmon.errors import FpmonError

ROOT = Path(__file__).parents[2]


def _config(url: str) -> AgentConfig:
    cfg = AgentConfig(engine=EngineConfig(kind="vllm"), vllm=VllmConfig(server=url))
    cfg.check()
    return cfg


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def plain_http(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on loopback that is not vLLM (it serves an empty folder)."""
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_unreachable_server_is_refused_with_the_command_to_run(closed_port):
    url = f"http://127.0.0.1:{closed_port}"
    with pytest.raises(FpmonError) as err:
        connect(_config(url))
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"[vllm] server = '{url}': cannot reach")
    assert serve_command("MODEL_FOLDER", closed_port) in msg and PLUGIN_FLAGS in msg


def test_a_server_that_is_not_vllm_is_named(plain_http):
    with pytest.raises(FpmonError, match=r"is this vLLM's OpenAI server\?") as err:
        connect(_config(plain_http))
    assert str(err.value).startswith(f"[vllm] server = '{plain_http}'")


@pytest.mark.parametrize("doc", ["docs/VLLM.md", "docs/AGENT.md"])
def test_the_docs_give_the_command_the_agent_names(doc):
    text = (ROOT / doc).read_text().replace("\\\n", " ")  # shell line continuations
    assert serve_command() in " ".join(text.split())
