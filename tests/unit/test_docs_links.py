"""The README links every document in docs/ (and the lab results), and every relative link in
it points at a file that is there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_the_readme_links_every_doc_and_no_link_is_dead():
    readme = (ROOT / "README.md").read_text()
    links = set(re.findall(r"\]\(([^)#\s]+)", readme))
    local = {x for x in links if not re.match(r"[a-z]+://", x)}
    assert not [x for x in local if not (ROOT / x).exists()], "dead links"
    docs = {f"docs/{p.name}" for p in (ROOT / "docs").glob("*.md")} | {"docs/lab/RESULTS.md"}
    assert docs - local == set()
