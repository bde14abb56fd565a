"""Snapshot tests of the main screens (pytest-textual-snapshot; Textual pinned to 8.2.8).

The model is filled with fixed real wire messages and a fixed clock, without sockets, so the
pictures depend on the code only. Update after an intended change: `pytest --snapshot-update`.
"""

from __future__ import annotations

import msgspec

from fpmon.monitor.app import MonitorApp
from fpmon.monitor.config import MonitorConfig, WatchConfig
from fpmon.monitor.model import FleetModel
from fpmon.testing import synth
from fpmon.wire import NodeSummary, decode, encode

SIZE = (150, 32)
T0 = 1_790_000_000.0  # fixed wall time for verdicts and alerts


def fixed(msg):
    return decode(encode(msgspec.structs.replace(msg, t=T0)))


def demo_model() -> FleetModel:
    """The demo fleet, plus a node doing hidden work beside honest numerics (its verdicts
    match; its GPU activity and a foreign process give it away)."""
    clock = [1000.0]
    m = FleetModel(clock=lambda: clock[0])
    cheats = {"batch": ("batch_size", 4), "attn": ("attn_impl", "eager"),
              "dtype": ("dtype", "bfloat16")}  # fmt: skip
    for step in range(8):
        for node in ("honest", *cheats, "tamper"):
            m.apply(fixed(synth.telemetry(f"node-{node}", gpus=8, util=30 + 8 * step)))
            m.apply(fixed(synth.commit(f"node-{node}", step)))
        m.apply(fixed(synth.gpm_telemetry("node-hidden", hidden=step >= 4)))
        m.apply(fixed(synth.commit("node-hidden", step)))
        m.apply(fixed(synth.verdict("node-honest", step)))
        m.apply(fixed(synth.verdict("node-hidden", step)))
        for node, (field, value) in cheats.items():
            m.apply(fixed(synth.verdict(f"node-{node}", step, "mismatch", field, value)))
        m.apply(fixed(synth.verdict("node-tamper", step, "bad_opening")))
        # The verifier's accounting windows, as the periodic state refreshes bring them.
        windows = {
            "node-honest": synth.capacity_window(T0 + 60 * step, hidden=False),
            "node-hidden": synth.capacity_window(T0 + 60 * step, hidden=step >= 4),
        }
        m.apply(synth.state({n: NodeSummary(accounting=w) for n, w in windows.items()}, t=T0))
        clock[0] += 1.0
        m.tick()
    m.apply(fixed(synth.alert("node-tamper", "bad_opening", 3)))
    m.apply(fixed(synth.alert("node-batch", "mismatch", 2)))
    for n in range(3):
        for a in synth.hidden_alerts("node-hidden", n, t=T0 + n):
            m.apply(a)
    return m


def make_app(theme: str = "fpmon-dark") -> MonitorApp:
    cfg = MonitorConfig(monitor=WatchConfig(theme=theme, refresh_s=0.05))
    app = MonitorApp(cfg, model=demo_model(), start_feed=False)
    app._last_tick = float("inf")  # the model was ticked as built; the app must not add ticks
    return app


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


def test_fleet_dark(snap_compare):
    assert snap_compare(make_app(), terminal_size=SIZE, run_before=settle)


def test_fleet_colorblind(snap_compare):
    assert snap_compare(make_app("fpmon-colorblind"), terminal_size=SIZE, run_before=settle)


def test_verdicts(snap_compare):
    async def before(pilot):
        await pilot.press("2")
        await settle(pilot)

    assert snap_compare(make_app("fpmon-light"), terminal_size=SIZE, run_before=before)


def test_alerts(snap_compare):
    async def before(pilot):
        await pilot.press("3")
        await settle(pilot)

    assert snap_compare(make_app("fpmon-high-contrast"), terminal_size=SIZE, run_before=before)


def test_evidence(snap_compare):
    async def before(pilot):
        await settle(pilot)
        table = pilot.app.screen.query_one("#fleet")
        table.move_cursor(row=table.get_row_index("node-batch"))
        await pilot.press("enter")
        await pilot.pause(0.3)

    assert snap_compare(make_app(), terminal_size=SIZE, run_before=before)


def test_capacity(snap_compare):
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
