"""The replay daemon's unit passes `systemd-analyze verify` in a root laid out as installed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "fpmon-replay.service"


@pytest.fixture
def verify(verify_unit):
    def _verify(tmp_path: Path, text: str) -> subprocess.CompletedProcess[str]:
        return verify_unit(tmp_path, text, UNIT.name)

    return _verify


def test_unit_verifies_clean_and_a_typo_is_seen(tmp_path: Path, verify) -> None:
    text = UNIT.read_text()
    ok = verify(tmp_path / "a", text)
    assert ok.returncode == 0 and "fpmon-replay" not in ok.stderr, ok.stderr
    assert "\nPrivateDevices=" not in text  # it would hide the reference GPU
    bad = verify(tmp_path / "b", text.replace("Restart=on-failure", "Restartt=on-failure"))
    assert "Restartt" in bad.stderr
