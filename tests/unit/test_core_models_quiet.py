"""Loading a model quiets transformers' own chatter: its logging, its loading bars, and its
FutureWarnings (deprecations inside transformers that `fpmon capture` printed every run)."""

from __future__ import annotations

import warnings

from fpmon import models


def test_transformers_future_warnings_are_quiet_fpmon_ones_are_not():
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        models._quiet_transformers()
        warnings.warn_explicit(
            "x is deprecated", FutureWarning, "configuration_utils.py", 485,
            module="transformers.generation.configuration_utils",
        )  # fmt: skip
        warnings.warn_explicit(
            "y is deprecated", FutureWarning, "engine.py", 1, module="fpmon.engines.hf"
        )
    assert [str(w.message) for w in seen] == ["y is deprecated"]
