"""Snapshot tests of the main screens (pytest-textual-snapshot; Textual pinned to 8.2.8).

The model (the `demo_model` fixture, tests/functional/conftest.py) is filled with fixed real wire
messages and a fixed clock, without sockets, so the pictures depend on the code only. Update
after an intended change: `pytest --snapshot-update`.
"""

from __future__ import annotations

import pytest

from fpmon.monitor.app import MonitorApp
from fpmon.monitor.config import MonitorConfig, WatchConfig

SIZE = (150, 32)


@pytest.fixture
def make_app(demo_model):
    def _make_app(theme: str = "fpmon-dark") -> MonitorApp:
        cfg = MonitorConfig(monitor=WatchConfig(theme=theme, refresh_s=0.05))
        app = MonitorApp(cfg, model=demo_model(), start_feed=False)
        app._last_tick = float("inf")  # the model was ticked as built; the app must not add ticks
        return app

    return _make_app


async def settle(pilot) -> None:
    """A busy machine can be slow to lay out a freshly switched screen: the footer composes
    its keys asynchronously. Wait until it has them, then for the screen to go idle."""
    from textual.widgets import Footer

    for _ in range(100):
        await pilot.pause(0.05)
        footers = pilot.app.screen.query(Footer)
        if footers and footers.first().children:
            break
    for _ in range(3):
        await pilot.pause(0.2)
        await pilot.wait_for_scheduled_animations()


def test_fleet_dark(snap_compare, make_app):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle)


def test_fleet_colorblind(snap_compare, make_app):
    assert snap_compare(make_app("fpmon-colorblind"), terminal_size=SIZE, run_before=settle)


def test_verdicts(snap_compare, make_app):
    async def before(pilot):
        await pilot.press("2")
        await settle(pilot)

    assert snap_compare(make_app("fpmon-light"), terminal_size=SIZE, run_before=before)


def test_alerts(snap_compare, make_app):
    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)

    assert snap_compare(make_app("fpmon-high-contrast"), terminal_size=SIZE, run_before=before)


def test_evidence(snap_compare, make_app):
    async def before(pilot):
        await settle(pilot)
        table = pilot.app.screen.query_one("#fleet")
        table.move_cursor(row=table.get_row_index("node-batch"))
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_capacity(snap_compare, make_app):
    async def before(pilot):
        await settle(pilot)
        table = pilot.app.screen.query_one("#fleet")
        table.move_cursor(row=table.get_row_index("node-hidden"))
        await pilot.press("h")
        await settle(pilot)
        # The foreign-process table fills from the node's telemetry after the screen mounts;
        # on a loaded CI host that came after `settle` once (narrower auto-width columns).
        for _ in range(100):
            if pilot.app.screen.query_one("#cap-procs").row_count:
                break
            await pilot.pause(0.05)
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)
