"""The sidecar tap's answers to servers that cannot be attached, over real loopback HTTP."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fpmon.engines.vllm.attach import ServerTap
from fpmon.errors import FpmonError

INFO = {
    "model": "tiny",
    "weights_digest": "00",
    "engine_version": "0.32.0",
    "torch_version": "2.13.0+cpu",
    "dtype": "bfloat16",
    "layers": [0],
    "attention_backend": "CPU_ATTN",
    "config": {"max_num_batched_tokens": 16, "max_num_seqs": 8, "prefix_caching": False},
}


def serve(status: int, body: dict | str) -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            data = (body if isinstance(body, str) else json.dumps(body)).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(request):
    yield from serve(*request.param)


def test_nothing_listening():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(FpmonError, match="cannot reach the vLLM server"):
        ServerTap(f"http://127.0.0.1:{port}", timeout_s=2).attach()


@pytest.mark.parametrize("server", [(404, {"detail": "Not Found"})], indirect=True)
def test_server_without_dev_mode(server):
    with pytest.raises(FpmonError, match="VLLM_SERVER_DEV_MODE=1"):
        ServerTap(server).attach()


# vLLM 0.32's answer, as the real server gives it (tests/functional/test_vllm_engine.py).
NOT_IMPLEMENTED = {
    "error": {
        "message": "Call to collective_rpc method failed: Method 'fpmon_attach' is not "
        "implemented.",
        "type": "InternalServerError",
        "code": 500,
    }
}


@pytest.mark.parametrize(
    "server",
    [(500, NOT_IMPLEMENTED), (500, "'CPUWorker' object has no attribute 'fpmon_attach'")],
    indirect=True,
)
def test_server_without_the_plugin(server):
    with pytest.raises(FpmonError, match="--worker-extension-cls"):
        ServerTap(server).attach()


@pytest.mark.parametrize(
    "server",
    [(200, {"results": [INFO | {"config": INFO["config"] | {"prefix_caching": True}}]})],
    indirect=True,
)
def test_server_with_prefix_caching_is_refused(server):
    with pytest.raises(FpmonError, match="--no-enable-prefix-caching"):
        ServerTap(server).attach()


@pytest.mark.parametrize(
    "server",
    [(200, {"results": [INFO | {"config": INFO["config"] | {"cuda_graphs": True}}]})],
    indirect=True,
)
def test_server_with_cuda_graphs_is_refused(server):
    with pytest.raises(FpmonError, match="--enforce-eager"):
        ServerTap(server).attach()


@pytest.mark.parametrize("server", [(200, {"results": [INFO]})], indirect=True)
def test_records_with_missing_positions_are_refused(server):
    tap = ServerTap(server)
    assert tap.attach()["model"] == "tiny"
    item = {
        "request_id": "cmpl-1",
        "prompt_ids": [5, 6, 7],
        "output_ids": [8, 9],
        "positions": [2],  # a preempted request recomputed without probes: one row missing
        "probes": {},
        "schedule": {"row_lengths": [3]},
    }
    with pytest.raises(FpmonError, match="preempted"):
        tap.to_record(item, node="n", seq=0)


def test_records_need_attach_first():
    with pytest.raises(FpmonError, match="attach"):
        ServerTap("http://127.0.0.1:9").setup_for(1, 0)
