"""The replay daemon's unit passes `systemd-analyze verify` in a root laid out as installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

# Same installed-root layout and skip rule (no systemd-analyze) as the agent's unit test.
from tests.functional.test_agent_systemd import pytestmark, verify_unit  # noqa: F401

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "fpmon-replay.service"


def verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
    return verify_unit(tmp_path, text, UNIT.name)


def test_unit_verifies_clean_and_a_typo_is_seen(tmp_path: Path) -> None:
    text = UNIT.read_text()
    ok = verify(tmp_path / "a", text)
    assert ok.returncode == 0 and "fpmon-replay" not in ok.stderr, ok.stderr
    assert "\nPrivateDevices=" not in text  # it would hide the reference GPU
    bad = verify(tmp_path / "b", text.replace("Restart=on-failure", "Restartt=on-failure"))
    assert "Restartt" in bad.stderr
