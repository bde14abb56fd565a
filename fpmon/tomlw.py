"""The TOML writer behind generated configs (agent drills, the demo fleet): tomli-w, the
standard library's `tomllib` counterpart, plus `Path` values written as strings.

    dumps({"node": "n1", "endpoints": {"intake": "tcp://..."}, "nodes": [{...}, {...}]})
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_plain(x) for x in v]
    if v is None:
        raise TypeError("cannot write NoneType to TOML (TOML has no null): leave the key out")
    return v


def dumps(doc: dict[str, Any]) -> str:
    return tomli_w.dumps(_plain(doc))
