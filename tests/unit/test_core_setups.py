"""The declared setup: how `compiled` is declared, and what attribution may change."""

from __future__ import annotations

import pytest

from fpmon.replay.attribution import single_changes
from fpmon.setups import REGIONAL_COMPILE, Setup


def test_a_compile_mode_needs_a_compiled_setup_and_travels_in_the_map() -> None:
    with pytest.raises(ValueError, match="not compiled"):
        Setup(compile_mode=REGIONAL_COMPILE)
    s = Setup().with_compiled(True)
    assert (s.compiled, s.compile_mode) == (True, REGIONAL_COMPILE)
    assert Setup.from_map(s.to_map()) == s
    assert s.with_compiled(False) == Setup()
    # A different compile strategy is a numeric difference of its own.
    assert Setup(compiled=True).numeric_diff(s) == ["compile_mode"]


def test_attribution_flips_compiled_and_its_mode_together() -> None:
    (flip,) = [c for f, c in single_changes(Setup(), ("compiled",), ()) if f == "compiled"]
    assert Setup().replace(**flip) == Setup().with_compiled(True)
    (back,) = [c for _, c in single_changes(Setup().with_compiled(True), ("compiled",), ())]
    assert Setup().with_compiled(True).replace(**back) == Setup()
