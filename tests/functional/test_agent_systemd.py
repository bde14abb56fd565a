"""The shipped unit passes `systemd-analyze verify`, inside a root laid out as installed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "fpmon-agent.service"
SYSTEM_UNITS = next(
    (
        p
        for p in (Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
        if (p / "sysinit.target").exists()
    ),
    None,
)

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or SYSTEM_UNITS is None,
    reason="systemd-analyze is not installed (apt-get install systemd; .ci/run does)",
)


def verify_unit(
    tmp_path: Path, text: str, name: str = "fpmon-agent.service"
) -> subprocess.CompletedProcess[str]:
    """Verify `text` as /etc/systemd/system/`name` in a root where the ExecStart binary exists
    (as after installing), so the shipped unit is checked unchanged."""
    root = tmp_path / "root"
    shutil.copytree(SYSTEM_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    exe = root / "opt/fpmon/.venv/bin/fpmon"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = root / "etc/systemd/system" / name
    unit.parent.mkdir(parents=True)
    unit.write_text(text)
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{name}"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_unit_verifies_clean(tmp_path):
    text = UNIT.read_text()
    p = verify_unit(tmp_path, text)
    assert p.returncode == 0 and "fpmon-agent" not in p.stderr, p.stderr
    for needed in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=",
        "CapabilityBoundingSet=",
        "SystemCallFilter=",
        "DevicePolicy=closed",
        "DeviceAllow=/dev/nvidiactl",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    ):
        assert needed in text, needed
    assert "\nPrivateDevices=" not in text  # it would hide /dev/nvidia* from NVML


def test_checker_sees_mistakes(tmp_path):
    p = verify_unit(tmp_path, UNIT.read_text().replace("Restart=on-failure", "Restartt=on-failure"))
    assert "Restartt" in p.stderr
