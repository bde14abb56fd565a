"""Hidden work on the dashboard, driven by Pilot on the real app: the fleet's hidden-work and
foreign-process columns from the verifier's periodic state replies (a real ROUTER) and the
node's telemetry (a real PUB), the capacity evidence screen, hidden-work alerts grouped per
node and kind, and hostile figures rendered without a crash."""

from __future__ import annotations

import asyncio
import io
import itertools

import pytest
from rich.console import Console

from fpmon.monitor.app import MonitorApp
from fpmon.monitor.config import MonitorConfig, WatchConfig
from fpmon.monitor.model import FleetModel
from fpmon.monitor.screens.capacity import CapacityScreen
from fpmon.testing import synth
from fpmon.wire import (
    CapacityMetric,
    CapacityWindow,
    GpuProcess,
    GpuSample,
    HostSample,
    NodeSummary,
    Telemetry,
    decode,
    encode,
)

SIZE = (190, 40)
T0 = 1_790_000_000.0


@pytest.fixture
def pub():
    p = synth.Publisher()
    yield p
    p.close()


def rendered(app: MonitorApp) -> str:
    """The terminal as the operator sees it, as plain text."""
    w, h = app.size
    console = Console(width=w, height=h, file=io.StringIO(), force_terminal=True,
                      color_system=None, record=True)  # fmt: skip
    console.print(app.screen._compositor.render_update(full=True))
    return console.export_text()


async def until(pilot, cond, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if cond():
            return
        await pilot.pause(0.05)
    raise AssertionError("condition not met in time")


def cell(app: MonitorApp, node: str, col: str) -> str:
    return str(app.screen.query_one("#fleet").get_cell(node, col))


def fleet_model() -> FleetModel:
    """A node doing hidden work (three windows, the last two over, a foreign process, its
    alerts three times over), an honest one, and one without GPUs."""
    m = FleetModel()
    m.apply(synth.gpm_telemetry("node-hidden", hidden=True))
    m.apply(synth.gpm_telemetry("node-honest", hidden=False))
    m.apply(Telemetry(node="node-cpu", t=T0, source="host", host=HostSample(cpus=2)))
    for i in range(3):
        m.apply(
            synth.state(
                {
                    "node-hidden": synth.hidden_summary("node-hidden", T0 + 60 * i, i >= 1),
                    "node-honest": NodeSummary(accounting=synth.capacity_window(T0, False)),
                }
            )
        )
    for n in range(3):
        for a in synth.hidden_alerts("node-hidden", n, t=T0 + n):
            m.apply(a)
    return m


def offline_app(model: FleetModel, **monitor) -> MonitorApp:
    cfg = MonitorConfig(monitor=WatchConfig(refresh_s=0.05, **monitor))
    app = MonitorApp(cfg, model=model, start_feed=False)
    return app


def test_the_column_follows_the_verifiers_windows_as_the_state_is_refreshed(pub):
    """The daemon's node summaries are asked for again every `state_refresh_s`; each refresh
    asks only for what is past the last reply's stream position."""
    n = itertools.count()

    def reply():
        i = next(n)
        return synth.state(
            {
                "node-hidden": NodeSummary(
                    capacity="checked", accounting=synth.capacity_window(T0 + 60 * i, i >= 2)
                ),
                "node-cpu": NodeSummary(capacity="not checked: the node reports no GPUs"),
            },
            stream_seq=100 + i,
        )

    server = synth.StateServer(reply)
    cfg = MonitorConfig(
        monitor=WatchConfig(
            refresh_s=0.05, endpoints=[pub.endpoint], state=server.endpoint, state_refresh_s=0.2
        )
    )
    app = MonitorApp(cfg)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await until(pilot, lambda: "node-hidden" in app.screen.query_one("#fleet")._shown)
            assert cell(app, "node-hidden", "hidden") in ("sm 1.0x", "! tensor 260x")
            await until(pilot, lambda: cell(app, "node-hidden", "hidden") == "! tensor 260x")
            table = app.screen.query_one("#fleet")
            flagged = table.get_cell("node-hidden", "hidden")
            assert str(flagged.style) == app.palette["fpmon-mismatch"]  # and `!`, not colour only
            assert cell(app, "node-hidden", "foreign") == "—"  # no telemetry of its own yet

            # The node's own telemetry (a real PUB) lists a process that is not its engine's.
            await until(
                pilot,
                lambda: (
                    pub.send(synth.gpm_telemetry("node-hidden", hidden=True)),
                    cell(app, "node-hidden", "foreign") == "! 1",
                )[1],
            )
            pub.send(Telemetry(node="node-cpu", t=T0, source="host", host=HostSample(cpus=2)))
            await until(pilot, lambda: cell(app, "node-cpu", "hidden") == "— no GPU")

            # `—` says why on hover (a real mouse move over the cell).
            col = [str(c.key.value) for c in table.ordered_columns].index("hidden")
            x = sum(c.get_render_width(table) for c in table.ordered_columns[:col]) + 2
            y = 1 + table.get_row_index("node-cpu")
            await pilot.hover("#fleet", offset=(x, y))
            await until(pilot, lambda: table.tooltip is not None)
            assert "no NVIDIA GPU" in table.tooltip.plain

    try:
        asyncio.run(run())
    finally:
        server.close()
    # Each refresh asks past the stream position of a reply already given (a reply slower than
    # state_timeout_s on a busy machine is asked for again, from the same position).
    sent = [r.since_verdicts for r in server.requests]
    assert len(sent) >= 3 and sent[0] == 0 and sent == sorted(sent)
    assert set(sent[1:]) <= {100 + i for i in range(len(sent) - 1)} and sent[-1] > 100


def test_the_capacity_screen_shows_metrics_over_time_processes_and_alerts():
    model = fleet_model()
    app = offline_app(model)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#fleet")
            await until(pilot, lambda: table.row_count == 3)
            assert cell(app, "node-hidden", "hidden") == "! tensor 260x"
            assert cell(app, "node-honest", "hidden") == "sm 1.0x"
            table.move_cursor(row=table.get_row_index("node-hidden"))
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, CapacityScreen))
            await pilot.pause()
            screen = app.screen
            metrics = screen.query_one("#cap-metrics")
            rows = {str(metrics.get_row_at(i)[0]): metrics.get_row_at(i)
                    for i in range(metrics.row_count)}  # fmt: skip
            assert set(rows) == {"util", "sm", "occ", "tensor", "dram"}
            tensor = [str(c) for c in rows["tensor"]]
            assert tensor[3] == "260x" and tensor[5] == "! OVER" and tensor[4] == "2x"
            assert rows["tensor"][5].style == app.palette["fpmon-mismatch"]
            # Over time: three windows, the first honest, the last two over.
            assert tensor[6].strip() == capacity_spark(model, "tensor_util")
            assert len(tensor[6].strip()) == 3
            assert [str(c) for c in rows["util"]][5] == "within"
            procs = screen.query_one("#cap-procs")
            assert [str(c) for c in procs.get_row_at(0)] == [
                "0", str(synth.FOREIGN.pid), "python3 matmul.py", "0.86 GB",
            ]  # fmt: skip
            alerts = screen.query_one("#cap-alerts")
            assert alerts.row_count == 9
            kinds = {str(alerts.get_row_at(i)[1]) for i in range(alerts.row_count)}
            assert kinds == {"undeclared_capacity", "foreign_process", "suspected_hidden_work"}
            # The plot and the note follow the metric under the cursor (the worst at first).
            note = screen.query_one("#cap-metric-note")
            assert screen.metric == "tensor_util" and "= 260x (OVER 2)" in str(note.render())
            metrics.move_cursor(row=metrics.get_row_index("dram_bw_util"))
            await until(pilot, lambda: screen.metric == "dram_bw_util")
            assert str(note.render()).startswith("dram 9.6 s observed / 1.92 s explained")
            text = rendered(app)
            assert "dram: observed vs explained, s per window" in text  # the plot
            assert "this node is not challenged" in text
            assert "hidden work: ! tensor 260x" in text and "foreign processes: ! 1" in text

            # Live: the foreign process gains a companion; the screen follows the model.
            two = [synth.ENGINE, synth.FOREIGN, GpuProcess(pid=6, name="miner", engine=False)]
            model.apply(synth.gpm_telemetry("node-hidden", processes=two))
            await until(pilot, lambda: procs.row_count == 2)
            assert str(procs.get_row_at(1)[2]) == "miner"

            await pilot.press("escape")
            await until(pilot, lambda: app.screen.query("#fleet"))

    asyncio.run(run())


def capacity_spark(model: FleetModel, metric: str) -> str:
    from fpmon.monitor.capacity import ratio_spark

    hist = model.nodes["node-hidden"].capacity_hist
    assert hist is not None
    return ratio_spark(hist.ratios(metric), 16).strip()


def test_the_capacity_binding_has_an_id_and_follows_the_keymap():
    app = MonitorApp(
        MonitorConfig(monitor=WatchConfig(refresh_s=0.05), keymap={"capacity": "f9"}),
        model=fleet_model(),
        start_feed=False,
    )

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#fleet")
            await until(pilot, lambda: table.row_count == 3)
            table.move_cursor(row=table.get_row_index("node-cpu"))
            await pilot.press("f9")
            await until(pilot, lambda: isinstance(app.screen, CapacityScreen))
            await pilot.pause()
            # Not judged: the reason, never a figure.
            assert "no NVIDIA GPU" in rendered(app)
            assert app.screen.query_one("#cap-metrics").row_count == 0
            await pilot.press("escape")
            await pilot.press("question_mark")
            await pilot.pause()
            help_table = app.screen.query_one("#help-table")
            rows = [[str(c) for c in help_table.get_row_at(i)] for i in range(help_table.row_count)]
            row = next(r for r in rows if r[3] == "capacity")
            assert row[0] == "f9" and row[2] == "fleet, alerts"

    asyncio.run(run())


def test_hidden_work_alerts_are_one_row_per_node_and_kind_and_open_the_capacity_screen():
    model = fleet_model()
    for n in range(3, 40):  # the daemon raises one per window / process / timing check
        for a in synth.hidden_alerts("node-hidden", n, t=T0 + n):
            model.apply(a)
    app = offline_app(model)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            table = app.screen.query_one("#alerts")
            await until(pilot, lambda: table.row_count == 3)
            key = "foreign_process:node-hidden"
            assert str(table.get_cell(key, "count")) == "40"
            assert str(table.get_cell(key, "kind")) == "foreign_process"
            assert "pid 5151" in str(table.get_cell(key, "message"))  # the latest evidence
            table.move_cursor(row=table.get_row_index(key))
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, CapacityScreen))
            assert app.screen.node == "node-hidden"

    asyncio.run(run())


def test_hostile_figures_render_without_a_crash():
    """Within the wire's bounds (NaN, negative and infinite figures are refused at decode):
    a ratio that overflows, markup and escape sequences in names, thousands of processes."""
    m = FleetModel()
    procs = [GpuProcess(pid=i, used_memory=None, name=f"[bold]\x1b[2J{i}[/]", engine=False)
             for i in range(256)]  # fmt: skip
    tele = Telemetry(
        node="evil", t=T0, gpus=[GpuSample(index=i, processes=procs) for i in range(8)]
    )
    m.apply(decode(encode(tele)))
    w = CapacityWindow(
        start_t=T0, window_s=1e12, tokens=2**62, gpus=65536,
        metrics=[
            CapacityMetric(metric="[red]x\x07", observed_s=1e12, explained_s=1e-310,
                           threshold=1e6, over=True, explained_by="a\nb\x1b[31m[/]" * 300),
            CapacityMetric(metric="tensor_util", observed_s=0.0, explained_s=0.0, threshold=1.0),
        ],
        not_judged={f"m{i}": "[b]why\x1b" for i in range(32)}, threshold_source="[/]" * 1000,
    )  # fmt: skip
    m.apply(decode(encode(synth.state({"evil": NodeSummary(capacity="[x", accounting=w)}))))
    for n in range(40):
        m.apply(synth.alert("evil", "foreign_process", n))
    app = offline_app(m)

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            table = app.screen.query_one("#fleet")
            await until(pilot, lambda: table.row_count == 1)
            assert cell(app, "evil", "hidden") == "! [red]x? ∞x"
            assert cell(app, "evil", "foreign") == "! 2048"
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, CapacityScreen))
            await pilot.pause()
            text = rendered(app)
            assert "\x1b" not in text and "\x07" not in text
            assert "[red]x?" in text and "∞x" in text
            procs = app.screen.query_one("#cap-procs")
            assert procs.row_count == 65  # 64 listed and "… 1984 more"
            assert "1984 more" in str(procs.get_row_at(64)[2])

    asyncio.run(run())


def test_a_repaint_while_the_app_exits_finds_no_screen_and_does_nothing():
    """The repaint timer can fire after the screen stack is gone (seen as a crash on exit)."""
    app = offline_app(fleet_model())

    async def run():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("h")
            await until(pilot, lambda: isinstance(app.screen, CapacityScreen))

    asyncio.run(run())
    assert not app.screen_stack
    app.repaint()  # raised ScreenStackError when it looked for the capacity screen
