"""The dashboard an inspector lives in (issue 15): Pilot on the real app, fed real wire
messages through the model, checked on what the screen shows.

Alert floods grouped per node and kind; the columns dialog applies on Enter and the table
behind it keeps updating; the help screen's words and keys; the sorted column marked; long
reasons use the spare width; a small fleet leaves no blank table; rates on a fixed scale;
evidence labels and noise band; scrollbars without stray glyphs; export says where.
"""

from __future__ import annotations

import asyncio
import io
import math

import msgspec
import pytest
from rich.console import Console

from fpmon.monitor import format as fmt
from fpmon.monitor.app import MonitorApp
from fpmon.monitor.config import MonitorConfig, WatchConfig
from fpmon.monitor.model import FleetModel
from fpmon.testing import synth
from fpmon.wire import Evidence, ProbeEvidence

WIDE = (200, 50)
T0 = 1_790_000_000.0


@pytest.fixture
def make_app(demo_model):
    def _make_app(model: FleetModel | None = None, **kw) -> MonitorApp:
        app = MonitorApp(
            MonitorConfig(monitor=WatchConfig(refresh_s=0.05)),
            model=model or demo_model(),
            start_feed=False,
            **kw,
        )
        app._last_tick = float("inf")  # the fixed model clock: no ticks from the app
        return app

    return _make_app


def screen_text(app: MonitorApp) -> list[str]:
    """The terminal as the operator sees it (dialogs over their screen), as plain lines."""
    w, h = app.size
    console = Console(
        width=w, height=h, file=io.StringIO(), force_terminal=True, color_system=None,
        record=True, legacy_windows=False, safe_box=False,
    )  # fmt: skip
    console.print(
        app.screen._compositor.render_update(full=True, screen_stack=app._background_screens)
    )
    return console.export_text().splitlines()


async def until(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not met in time")


def run(app: MonitorApp, body, size=WIDE) -> None:
    async def go():
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.3)
            await body(pilot)

    asyncio.run(go())


# -- alerts ------------------------------------------------------------------------------
def flood_model(nodes: int = 300, per_node: int = 20) -> FleetModel:
    """The replay daemon's habit: one alert (its own id) per bad verdict."""
    m = FleetModel()
    for seq in range(per_node):
        for i in range(nodes):
            a = synth.alert(f"node-{i:04d}", "mismatch", seq)
            m.apply(msgspec.structs.replace(a, t=T0 + seq))
    return m


def test_an_alert_flood_is_one_row_per_node_and_kind(make_app):
    m = flood_model()
    app = make_app(m)

    async def body(pilot):
        await pilot.press("3")
        table = app.screen.query_one("#alerts")
        await until(pilot, lambda: table.row_count == 300)
        assert str(table.get_cell("mismatch:node-0007", "count")) == "20"
        assert str(table.get_cell("mismatch:node-0007", "seq")) == "19"  # the latest
        assert str(table.get_cell("mismatch:node-0007", "first")) == fmt.clock(T0)
        assert str(table.get_cell("mismatch:node-0007", "last")) == fmt.clock(T0 + 19)
        summary = " ".join(screen_text(app)[:3])
        assert "300 open of 300 (node, kind) groups" in summary and "6000 alerts" in summary
        # Acknowledge the row under the cursor; the same kind again opens it again.
        table.move_cursor(row=table.get_row_index("mismatch:node-0007"))
        await pilot.press("a")
        await until(pilot, lambda: str(table.get_cell("mismatch:node-0007", "state")) == "✓ acked")
        assert m.open_alerts == 299
        m.apply(synth.alert("node-0007", "mismatch", 99))
        await until(pilot, lambda: str(table.get_cell("mismatch:node-0007", "state")) == "! OPEN")
        assert str(table.get_cell("mismatch:node-0007", "count")) == "21"
        assert table.row_count == 300

    run(app, body)


def test_scrollbars_draw_no_stray_glyphs(make_app):
    """A long table's scrollbar thumb is whole cells: Textual's eighth-block ends (▆, ▉)
    showed as stray glyphs at the right edge in a 256-colour tmux."""
    app = make_app(flood_model(nodes=120, per_node=1))

    async def body(pilot):
        await pilot.press("3")
        table = app.screen.query_one("#alerts")
        await until(pilot, lambda: table.row_count == 120)
        table.scroll_to(y=37, animate=False)
        await pilot.pause(0.2)
        lines = screen_text(app)[:-1]  # the footer's own "▏^p palette" aside
        stray = set("▁▂▃▄▅▆▇▉▊▋▌▍▎▏")
        assert not [ln for ln in lines if stray & set(ln)], "\n".join(lines)

    run(app, body, size=(150, 32))


# -- columns dialog ------------------------------------------------------------------------
def test_columns_dialog_applies_on_enter_and_the_table_keeps_updating(make_app, demo_model):
    m = demo_model()
    app = make_app(m)

    async def body(pilot):
        table = app.screen.query_one("#fleet")
        await until(pilot, lambda: table.row_count == 6)
        await pilot.press("c")
        await until(pilot, lambda: type(app.screen).__name__ == "ColumnsScreen")
        # Behind the dialog the fleet table still follows the feed.
        m.apply(synth.telemetry("node-honest", gpus=8, util=12.5))
        await until(pilot, lambda: "12.5" in str(table.get_cell("node-honest", "util")))
        # Hide "Util" (the eighth column): Space toggles it, Enter applies (and must not
        # toggle it back first).
        for _ in range(7):
            await pilot.press("down")
        await pilot.press("space")
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "FleetScreen")
        assert "util" in table.hidden
        assert "util" not in {str(k.value) for k in table.columns}

    run(app, body)


# -- help ------------------------------------------------------------------------------------
def test_help_says_every_word_shows_keys_as_typed_and_only_live_keys(make_app):
    app = make_app()

    async def body(pilot):
        await pilot.press("question_mark")
        await until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.pause(0.2)
        text = "\n".join(screen_text(app))
        assert "by id in the config's [keymap] table" in text
        help_table = app.screen.query_one("#help-table")
        rows = [[str(c) for c in help_table.get_row_at(i)] for i in range(help_table.row_count)]
        keys = {r[3]: r[0] for r in rows}
        assert keys["help"] == "?" and keys["filter"] == "/"
        assert not [r for r in rows if "question_mark" in r[0] or "_bracket" in r[0]]
        assert not [r for r in rows if r[3].startswith("play.")]  # live: no playback keys
        assert keys["alerts.ack"] == "a" and "alerts" in {r[2] for r in rows}

    run(app, body)


# -- tables ------------------------------------------------------------------------------------
def test_the_sorted_column_is_marked(make_app):
    app = make_app()

    async def body(pilot):
        table = app.screen.query_one("#fleet")
        await until(pilot, lambda: table.row_count == 6)
        labels = {str(k.value): str(c.label) for k, c in table.columns.items()}
        assert labels["node"] == "▲ Node" and labels["health"] == "Status"
        header = next(ln for ln in screen_text(app) if "Node" in ln and "Status" in ln)
        assert "▲ Node" in header
        await pilot.press("s")  # the next column
        labels = {str(k.value): str(c.label) for k, c in table.columns.items()}
        assert labels["attribution"] == "▲ Attribution" and labels["node"] == "Node"
        await pilot.press("S")
        labels = {str(k.value): str(c.label) for k, c in table.columns.items()}
        assert labels["attribution"] == "▼ Attribution"

    run(app, body)


def test_a_long_reason_uses_the_spare_width(make_app):
    m = FleetModel()
    reason = "opened bytes match the digest but are not a record: " + "x" * 40 + " END"
    m.apply(msgspec.structs.replace(synth.verdict("node-tamper", 9, "bad_opening"), reason=reason))
    app = make_app(m)

    async def body(pilot):
        await pilot.press("2")
        table = app.screen.query_one("#verdicts")
        await until(pilot, lambda: table.row_count == 1)
        await pilot.pause(0.2)
        lines = screen_text(app)
        assert any(reason in ln for ln in lines), "\n".join(lines)

    run(app, body)


def test_a_small_fleet_leaves_no_blank_rows_the_selected_node_takes_the_room(make_app):
    app = make_app()

    async def body(pilot):
        table = app.screen.query_one("#fleet")
        await until(pilot, lambda: table.row_count == 6)
        await pilot.pause(0.2)
        assert table.region.height <= 8  # the header, 5 rows (and a horizontal scrollbar)
        assert app.screen.query_one("#detail").region.height >= 30

    run(app, body)


def test_a_steady_100_percent_mismatch_rate_is_drawn_at_the_top(make_app):
    """Every verdict of node-batch mismatches: its chart is full height, labelled 100%
    (Textual's Sparkline scaled min..max and drew a constant as a flat bottom line)."""
    app = make_app()

    async def body(pilot):
        table = app.screen.query_one("#fleet")
        await until(pilot, lambda: table.row_count == 6)
        table.move_cursor(row=table.get_row_index("node-batch"))
        await pilot.pause(0.3)
        lines = screen_text(app)
        i = next(i for i, ln in enumerate(lines) if "mismatch rate" in ln)
        assert "100%" in lines[i]
        top = lines[i + 1]
        assert "100%▕" in top and "████████" in top, "\n".join(lines[i : i + 4])

    run(app, body)


# -- evidence ------------------------------------------------------------------------------------
def test_evidence_chart_labels_decades_and_draws_the_band_it_names(make_app):
    from fpmon.monitor.screens.evidence import evidence_plot

    honest = synth.verdict("n", 1)  # every distance 0, exact mode
    p = evidence_plot(honest)
    assert p.ylabels and all(len(x) <= 5 for x in p.ylabels), p.ylabels
    assert not p.band and "no noise band" in p.title
    cheat = synth.verdict("n", 2, "mismatch", "batch_size", 4)
    p = evidence_plot(cheat)
    assert p.ylabels[0] == "0" and all(x == "0" or x.startswith("1e-") for x in p.ylabels)
    assert p.zero[0] and not any(p.zero[1:])  # L0 bit-identical
    banded = msgspec.structs.replace(
        cheat,
        evidence=Evidence(
            mode="band",
            probes=[ProbeEvidence(probe=f"keys.L{i}", rel=10.0 ** -(3 + i), band=1e-4)
                    for i in range(4)],
        ),
    )  # fmt: skip
    p = evidence_plot(banded)
    assert "vs noise band" in p.title and p.band == [math.log10(1e-4)] * 4

    app = make_app()

    async def body(pilot):
        table = app.screen.query_one("#fleet")
        await until(pilot, lambda: table.row_count == 6)
        table.move_cursor(row=table.get_row_index("node-batch"))
        await pilot.press("enter")
        await until(pilot, lambda: type(app.screen).__name__ == "EvidenceScreen")
        await pilot.pause(0.3)
        text = "\n".join(screen_text(app))
        assert "1e-4" in text and "0.000" not in text
        assert text.count("noise band") == 1 and "no noise band" in text  # the title only

    run(app, body)


# -- export ------------------------------------------------------------------------------------
def test_export_goes_to_a_known_folder_and_says_where(tmp_path, monkeypatch, make_app):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    app = make_app()

    async def body(pilot):
        await pilot.press("2")
        table = app.screen.query_one("#verdicts")
        await until(pilot, lambda: table.row_count == 48)
        await pilot.press("x")
        await pilot.pause(0.2)
        folder = tmp_path / "data" / "fpmon" / "exports"
        (csv,) = folder.glob("fpmon-verdicts-*.csv")
        assert [p.name for p in tmp_path.iterdir()] == ["data"]  # nothing in the cwd
        said = [n.message for n in app._notifications]
        assert any(str(csv) in m for m in said), said

    run(app, body)


# -- load: render only what changed and is visible ---------------------------------------------
def test_a_changed_row_redraws_its_own_line_and_rows_changed_off_screen_show_when_scrolled_in(
    make_app,
):
    m = FleetModel()
    for i in range(200):
        m.apply(synth.telemetry(f"node-{i:04d}", gpus=8, util=50.0))
    app = make_app(m)

    def line_of(node: str) -> str:
        return next((ln for ln in screen_text(app) if f" {node} " in ln), "")

    async def body(pilot):
        table = app.screen.query_one("#fleet")
        await until(pilot, lambda: table.row_count == 200)
        await pilot.pause(0.3)
        drawn = []
        render = table._render_line_in_row

        def counting(row_key, *a, **kw):
            drawn.append(row_key.value)
            return render(row_key, *a, **kw)

        table._render_line_in_row = counting
        m.apply(synth.telemetry("node-0003", gpus=8, util=12.5))
        await until(pilot, lambda: "12.5%" in line_of("node-0003"))
        # One row's cells changed: that line is drawn again, not the ~30 others on screen.
        assert set(drawn) == {"node-0003"}, drawn
        # A row far below changes while off screen; scrolled to, it shows the new value.
        m.apply(synth.telemetry("node-0190", gpus=8, util=77.7))
        for _ in range(20):  # off-screen rows are caught up a few per repaint
            await pilot.pause(0.06)
        table.move_cursor(row=table.get_row_index("node-0190"))
        await until(pilot, lambda: "77.7%" in line_of("node-0190"))

    run(app, body, size=(160, 40))
