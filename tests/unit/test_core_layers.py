"""The default probe layers follow the H200 probe sweep (docs/lab/RESULTS.md)."""

from __future__ import annotations

from fpmon.engines.base import default_layers


def test_default_layers_take_the_first_after_attention_then_a_spread() -> None:
    # Layer 1 (first keys after an attention) is where attention and dtype changes stood far
    # above kernel rounding on the H200; the spread keeps what only later layers see.
    assert default_layers(28) == [0, 1, 7, 14, 21, 27]
    assert default_layers(6) == [0, 1, 3, 4, 5]
    assert default_layers(2) == [0, 1]
    assert default_layers(1) == [0]
