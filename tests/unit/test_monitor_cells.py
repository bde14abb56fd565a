"""Table cells: the wire's words reach the terminal as text."""

from __future__ import annotations


def test_a_table_cell_never_carries_a_control_character_to_the_terminal():
    from fpmon.monitor.widgets.live_table import cell

    assert cell("node-1").text == "node-1"
    assert cell("evil\x1b[2Jnode\nx").text == "evil?[2Jnode x"
