"""The drills' children import the code the drill imported, under the `fpmon` namespace only."""

from __future__ import annotations

import os
from pathlib import Path

from fpmon.testing.drills.procs import child_env


def test_children_get_the_repository_root_first_not_the_fpmon_folder():
    first = Path(child_env()["PYTHONPATH"].split(os.pathsep)[0])
    # The fpmon folder itself on the path would make `agents`, `replay`, `monitor` top-level
    # import names again (the symlinked component folders), which packaging forbids.
    assert (first / "fpmon" / "__init__.py").is_file()
    assert not (first / "__init__.py").exists()
