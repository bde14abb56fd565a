"""The configured theme's palette is there from construction (watch_theme runs from __init__)."""

from __future__ import annotations

import pytest

from fpmon import themes
from fpmon.monitor.app import MonitorApp
from fpmon.monitor.config import MonitorConfig, WatchConfig


@pytest.mark.parametrize("name", themes.available())
def test_the_configured_themes_palette_is_there_before_mount(name: str) -> None:
    app = MonitorApp(MonitorConfig(monitor=WatchConfig(theme=name)), start_feed=False)
    assert app.theme == name
    want = {k: v for k, v in app.get_css_variables().items() if k.startswith("fpmon-")}
    assert want and app.palette == want
