"""The style guide's rule for tests: shared helpers reach their users as fixtures (the
conftest.py files) or from fpmon.testing, never by one test module importing another, or
conftest. Checked on the source, so it stays that way."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def imports_of_tests(path: Path) -> list[str]:
    """Each import in `path` of the tests package or of a module in it, as written, with its
    line: `import tests.x`, `from tests.x import y`, and relative imports (`from .x import y`)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "tests"]
            found += [f"{node.lineno}: import {n}" for n in names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] == "tests":
                found.append(f"{node.lineno}: from {'.' * node.level}{module} import ...")
    return found


def test_no_test_module_imports_another_or_conftest() -> None:
    offenders = {
        str(path.relative_to(TESTS.parent)): hits
        for path in sorted(TESTS.rglob("*.py"))
        if (hits := imports_of_tests(path))
    }
    assert not offenders, (
        "test modules import helpers from tests/ (make them fixtures in a conftest.py, or "
        f"harness code in fpmon/testing): {offenders}"
    )


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text(
        "import tests.conftest\n"
        "from tests.functional.test_agent_stream import ONE_THREAD\n"
        "from tests import fakenvml\n"
        "from .test_other import helper\n"
        "def f():\n"
        "    from tests.conftest import tiny_engine\n"
        "import testsuite, fpmon.testing\n"
        "from fpmon.testing.raw import raw_open\n"
    )
    assert [hit.split(":")[0] for hit in imports_of_tests(bad)] == ["1", "2", "3", "4", "6"]
