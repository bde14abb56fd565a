"""The TOML writer behind generated configs (agent drills, the demo fleet): tomli-w, the
standard library's `tomllib` counterpart, plus `Path` values written as strings; `write`
puts a config on disk private (0600), as the config layer wants one naming secrets.

    dumps({"node": "n1", "endpoints": {"intake": "tcp://..."}, "nodes": [{...}, {...}]})
"""

from __future__ import annotations

import os
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


def write(path: Path, doc: dict[str, Any]) -> None:
    """`doc` to `path`, private (0600) from the first byte: a config fpmon writes may name
    secrets, and the config layer refuses such a file when others can read it."""
    data = dumps(doc).encode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600)
