"""docs/QUICKSTART.md runs as written: bench/quickstart.sh runs its marked blocks (keys, a Curve
hub, an agent, the replay daemon, `fpmon submit` traffic, `fpmon snapshot --json`, stop) on the
CPU with the tiny model, and the honest node gets `match` verdicts and no critical alert."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "QUICKSTART.md"
RUNNER = ROOT / "bench" / "quickstart.sh"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _free_port_base() -> int:
    """A loopback base with its 22 ports free now (the doc uses PORT_BASE .. PORT_BASE+21)."""
    import socket

    for base in range(27400, 40000, 97):
        socks = []
        try:
            for p in range(base, base + 22):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free block of 22 loopback ports")


def test_the_doc_marks_its_blocks_and_a_stop_block() -> None:
    text = DOC.read_text()
    marks = re.findall(r"^<!-- quickstart(: *stop)? -->\n```bash$", text, re.M)
    assert len(marks) >= 8 and marks[-1].strip(": ") == "stop", marks


def test_quickstart_runs_on_the_cpu_with_the_tiny_model(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "MODEL": "tiny",
        "NODE_DEVICE": "cpu",
        "VERIFIER_DEVICE": "cpu",
        "PYTHON": sys.executable,  # the interpreter, and the tree, under test
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "QUICKSTART_DIR": str(tmp_path / "qs"),
        "PORT_BASE": str(_free_port_base()),
        "VERDICTS": "4",
        "WAIT_S": "240",
    }
    for k in ("FLEET", "REQUESTS"):
        env.pop(k, None)
    p = subprocess.run(
        ["bash", str(RUNNER)], env=env, capture_output=True, text=True, timeout=380, check=False
    )
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert "quickstart: OK: node-a" in out, out[-3000:]
    assert re.search(r"node-a +ok +commits=\d+ +match=\d+$", out, re.M), out[-3000:]
    # Every service was stopped by the doc's last block: no pid file is left behind.
    assert not list((tmp_path / "qs" / "fleet" / "run").glob("*.pid"))
