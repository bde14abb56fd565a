"""The dashboard driven by Pilot against real ZeroMQ sockets on loopback publishing real
`fpmon.wire` frames: rows appear, a mismatching node turns red with its attribution,
filtering, columns, theme switching, the evidence, help and alert screens, pause and export."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import zmq

from fpmon.monitor.app import FeedReady, MonitorApp, NodeAppeared, NodeFlagged
from fpmon.monitor.config import MonitorConfig, WatchConfig
from fpmon.testing import synth
from fpmon.wire import StateReply, encode

SIZE = (170, 40)


def watching(**monitor: Any) -> MonitorConfig:
    """A monitor config with these `[monitor]` keys, repainting every 0.1 s."""
    return MonitorConfig(monitor=WatchConfig(**{"refresh_s": 0.1, **monitor}))


async def wait_for(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not met in time")


async def feed_fleet(pilot, pub, app, n: int = 3) -> None:
    """Publish until the SUB has joined (slow joiner), then a small fleet."""
    await wait_for(
        pilot, lambda: (pub.send(synth.telemetry("honest")), "honest" in app.model.nodes)[1]
    )
    for i in range(n):
        pub.send(synth.commit("honest", i), synth.commit("batchy", i), synth.telemetry("batchy"))
    pub.send(synth.verdict("honest", 1))
    pub.send(synth.verdict("batchy", 1, "mismatch", "batch_size", 4))
    pub.send(synth.alert("batchy", "mismatch", 1))
    await wait_for(
        pilot, lambda: app.model.nodes.get("batchy") and app.model.nodes["batchy"].recent
    )
    await pilot.pause(0.3)


def cell_text(table, row: str, col: str) -> str:
    return str(table.get_cell(row, col))


@pytest.fixture
def pub():
    p = synth.Publisher()
    yield p
    p.close()


@pytest.fixture
def on_screen():
    """`on_screen(screen, check)`: an app showing only `screen`; `check()` runs once it is up."""
    from textual.app import App

    def show(screen: Any, check: Any) -> None:
        class One(App):
            def on_mount(self) -> None:
                self.push_screen(screen)

        async def run() -> None:
            async with One().run_test(size=SIZE) as pilot:
                await pilot.pause(0.2)
                check()

        asyncio.run(run())

    return show


def test_rows_appear_cheat_turns_red_with_attribution(pub, tmp_path):
    seen = []
    app = MonitorApp(watching(endpoints=[pub.endpoint]), export_dir=tmp_path)

    async def run():
        async with app.run_test(size=SIZE, message_hook=seen.append) as pilot:
            await feed_fleet(pilot, pub, app)
            table = app.screen.query_one("#fleet")
            assert table.row_count == 2
            status = table.get_cell("batchy", "health")
            assert str(status) == "✗ FLAGGED"  # a symbol and a word, not colour alone
            assert str(status.style) == app.palette["fpmon-mismatch"]
            assert cell_text(table, "batchy", "attribution") == "batch_size"
            assert str(table.get_cell("honest", "health")) == "✓ OK"
            assert str(table.get_cell("honest", "health").style) == app.palette["fpmon-ok"]
            # posted messages: nodes appeared, the cheat was flagged with its attribution
            flagged = [m for m in seen if isinstance(m, NodeFlagged)]
            assert [(m.node, m.attribution) for m in flagged] == [("batchy", "batch_size")]
            assert {m.node for m in seen if isinstance(m, NodeAppeared)} == {"honest", "batchy"}
            assert any(isinstance(m, FeedReady) for m in seen)

            # in place: the same row object count, a changed cell after more telemetry
            pub.send(synth.telemetry("honest", util=93.0))
            await wait_for(pilot, lambda: "93.0" in cell_text(table, "honest", "util"))
            assert table.row_count == 2

            # `/` regex filter, then clear
            await pilot.press("slash")
            await pilot.press(*"bat")
            await pilot.press("enter")
            assert table.row_count == 1 and "batchy" in table._shown
            await pilot.press("escape")
            assert table.row_count == 2

            # theme switching repaints the status colours from the new theme
            app.theme = "fpmon-colorblind"
            await pilot.pause(0.3)
            assert str(table.get_cell("batchy", "health").style) == "#d55e00"

            # evidence of the flagged node: declared vs best candidate, the plot
            table.move_cursor(row=table.get_row_index("batchy"))
            await pilot.press("enter")
            await wait_for(pilot, lambda: type(app.screen).__name__ == "EvidenceScreen")
            setup = app.screen.query_one("#setup")
            rows = {
                str(setup.get_row_at(i)[0]): setup.get_row_at(i) for i in range(setup.row_count)
            }
            assert [str(c) for c in rows["batch_size"][1:]] == ["1", "4", "≠ differs"]
            await pilot.press("escape")

            # alerts: one open, acknowledge it
            await pilot.press("3")
            await wait_for(pilot, lambda: app.screen.query_one("#alerts").row_count == 1)
            assert app.model.open_alerts == 1
            await pilot.press("a")
            assert app.model.open_alerts == 0

            # verdicts: pause loses nothing, export writes the view
            await pilot.press("2")
            vt = app.screen.query_one("#verdicts")
            await wait_for(pilot, lambda: vt.row_count == 2)
            await pilot.press("p")
            pub.send(synth.verdict("honest", 2), synth.verdict("honest", 3))
            await wait_for(pilot, lambda: app.model.verdicts_total == 4)
            await pilot.pause(0.3)
            assert vt.row_count == 2
            await pilot.press("p")
            await wait_for(pilot, lambda: vt.row_count == 4)
            await pilot.press("x")
            await pilot.pause(0.1)
            exported = list(tmp_path.glob("fpmon-verdicts-*.json"))
            assert len(exported) == 1
            assert len(json.loads(exported[0].read_text())) == 4
            assert len(list(tmp_path.glob("fpmon-verdicts-*.csv"))) == 1

            await pilot.press("question_mark")
            assert type(app.screen).__name__ == "HelpScreen"

    asyncio.run(run())


def test_late_joiner_gets_state_at_once_and_inspector_is_read_only(pub, tmp_path):
    v = synth.verdict("old", 7, "mismatch", "attn_impl", "eager")
    server = synth.StateServer(
        StateReply(
            node="replay",
            t=0.0,
            nodes={"old": {"commits": 40, "declared": synth.DECLARED}},
            verdicts=[v.to_map()],
            alerts=[synth.alert("old", "mismatch", 7).to_map()],
        )
    )
    cfg = watching(endpoints=[pub.endpoint], state=server.endpoint, inspector=True)
    app = MonitorApp(cfg, export_dir=tmp_path)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            # Nothing is published: the snapshot alone fills the table (Clone pattern).
            await wait_for(pilot, lambda: "old" in app.screen.query_one("#fleet")._shown)
            table = app.screen.query_one("#fleet")
            assert cell_text(table, "old", "attribution") == "attn_impl"
            assert app.model.endpoints[server.endpoint] == "live"
            await pilot.press("3")
            await pilot.pause(0.2)
            await pilot.press("a")  # read-only: acknowledge is disabled
            assert app.model.open_alerts == 1

    try:
        asyncio.run(run())
    finally:
        server.close()


def test_unreachable_endpoint_shows_lost_not_a_traceback():
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUB)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    s.close(0)  # a port nobody listens on
    ep = f"tcp://127.0.0.1:{port}"
    app = MonitorApp(watching(endpoints=[ep]))

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.model.endpoints.get(ep) == "lost")
            await pilot.pause(0.2)
            assert f"○ {ep} lost" in str(app.screen.query_one("#summary").render())

    asyncio.run(run())


def test_playback_of_a_recorded_feed_with_seek(tmp_path):
    """Record (raw frames, as the feed worker does), then review it in the app with seek."""
    from fpmon.monitor.feed import Recorder

    rec = Recorder(tmp_path / "incident.fprec")
    t0 = 1_790_000_000.0
    for i in range(30):  # 30 s of a node; it starts mismatching at 20 s
        rec.write(encode(synth.telemetry("replayed")), t=t0 + i)
        status = "mismatch" if i >= 20 else "match"
        rec.write(encode(synth.verdict("replayed", i, status, "dtype", "bfloat16")), t=t0 + i)
    rec.close()
    app = MonitorApp(watching(), play=str(tmp_path / "incident.fprec"))

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: "replayed" in app.model.nodes)
            assert app.model.nodes["replayed"].health == "ok"  # 1x speed: still early on
            await pilot.press("space")  # pause
            await pilot.press("right_square_bracket", "right_square_bracket")  # +20 s
            await wait_for(pilot, lambda: app.model.nodes["replayed"].health == "flagged")
            assert "playback" in app.sub_title
            await pilot.press(*["left_square_bracket"] * 3)  # back to the start: a fresh model
            await wait_for(pilot, lambda: app.model.nodes.get("replayed") is None
                           or app.model.nodes["replayed"].health == "ok")  # fmt: skip
            assert app.model.verdicts_total <= 2

    asyncio.run(run())


def test_command_palette_and_keymap_rebinding(tmp_path):
    cfg = watching()
    cfg.keymap = {"verdicts": "f2", "alerts": "f3"}
    app = MonitorApp(cfg, start_feed=False)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("f2")  # rebound from "2" by the config's [keymap]
            await wait_for(pilot, lambda: app.current_mode == "verdicts")
            await pilot.press("ctrl+p")
            await pilot.pause(0.3)
            await pilot.press(*"Alerts")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await wait_for(pilot, lambda: app.current_mode == "alerts")

    asyncio.run(run())


def test_evidence_of_an_unattributed_mismatch_says_why(on_screen) -> None:
    import msgspec

    from fpmon.monitor.model import VerdictEntry
    from fpmon.monitor.screens.evidence import EvidenceScreen

    v = synth.verdict("dtype-cheat", 7, "mismatch", "dtype", "bfloat16")
    ev = msgspec.structs.replace(
        v.evidence,
        attribution_status="budget",
        attribution_note="no exact reproduction: attribution stopped at the record's replay "
        "budget (max_replay_s) after 3 of 9 candidates",
    )
    v = msgspec.structs.replace(v, attribution=[], evidence=ev)
    screen = EvidenceScreen(VerdictEntry(verdict=v, received=0.0, key=("dtype-cheat", 7, "", 0)))

    def check() -> None:
        att = screen.query_one("#attribution")
        text = " ".join(str(c) for c in att.get_row_at(0))
        assert "only mismatches" not in text and "replay budget" in text
        assert "(budget)" in str(screen.query_one("#summary").render())

    on_screen(screen, check)


def test_evidence_shows_markup_in_wire_strings_as_text(on_screen) -> None:
    # Node names and setup values are the node's own words: Rich markup in them ("[/]" raises
    # MarkupError when parsed) must be drawn as text, never crash the inspector's dashboard.
    import msgspec

    from fpmon.monitor.model import VerdictEntry
    from fpmon.monitor.screens.evidence import EvidenceScreen

    v = synth.verdict("dtype-cheat", 7, "mismatch", "dtype", "bfloat16")
    v = msgspec.structs.replace(
        v, node="[/]evil[bold", declared={**v.declared, "dtype": "[/]\x1b[31m"}
    )
    screen = EvidenceScreen(VerdictEntry(verdict=v, received=0.0, key=(v.node, 7, "", 0)))

    def check() -> None:
        assert "[/]evil[bold" in str(screen.query_one("#summary").render())
        rows = screen.query_one("#setup")
        cells = [str(c) for r in range(rows.row_count) for c in rows.get_row_at(r)]
        assert "[/]?[31m" in cells

    on_screen(screen, check)
