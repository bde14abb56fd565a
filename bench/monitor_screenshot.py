"""Screenshots of the dashboard on a real demo fleet, for the README and docs/MONITOR.md.

    python bench/monitor_screenshot.py            # writes docs/monitor-*.svg

Starts the demo fleet (hub, five agents, replay daemon, load generator), drives the real app
headless until every node has its verdicts, then saves the Fleet, Verdicts and Evidence views.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

from fpmon.monitor.app import MonitorApp
from fpmon.monitor.demo import NODES, Fleet

DOCS = Path(__file__).resolve().parent.parent / "docs"


async def shoot(fleet: Fleet, size: tuple[int, int], wait_s: float) -> None:
    app = MonitorApp(fleet.monitor_config(), problems=fleet.problems)
    app.title = "fpmon demo"
    async with app.run_test(size=size) as pilot:
        t0 = time.monotonic()
        while time.monotonic() - t0 < wait_s:
            rows = app.model.nodes
            if all(n.name in rows and len(rows[n.name].recent) >= 3 for n in NODES):
                break
            await pilot.pause(0.5)
        await pilot.pause(3.0)  # a few more ticks: sparklines and rates fill in
        app.save_screenshot(str(DOCS / "monitor-fleet.svg"))
        await pilot.press("2")
        await pilot.pause(1.0)
        app.save_screenshot(str(DOCS / "monitor-verdicts.svg"))
        await pilot.press("1")
        await pilot.pause(0.5)
        table = app.screen.query_one("#fleet")
        table.move_cursor(row=table.get_row_index("node-batch"))
        await pilot.press("enter")
        await pilot.pause(1.0)
        app.save_screenshot(str(DOCS / "monitor-evidence.svg"))


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="fpmon-shot-") as d:
        fleet = Fleet(Path(d))
        fleet.start()
        try:
            asyncio.run(shoot(fleet, (176, 30), 120.0))
        finally:
            fleet.stop()
    print(f"wrote {DOCS}/monitor-fleet.svg, monitor-verdicts.svg, monitor-evidence.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
