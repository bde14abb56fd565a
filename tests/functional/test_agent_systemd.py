"""The shipped unit passes `systemd-analyze verify`, inside a root laid out as installed."""

from __future__ import annotations

from pathlib import Path

UNIT = Path(__file__).parents[2] / "deploy" / "systemd" / "fpmon-agent.service"


def test_unit_verifies_clean(tmp_path, verify_unit):
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


def test_checker_sees_mistakes(tmp_path, verify_unit):
    p = verify_unit(tmp_path, UNIT.read_text().replace("Restart=on-failure", "Restartt=on-failure"))
    assert "Restartt" in p.stderr
