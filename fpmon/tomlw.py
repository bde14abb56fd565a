"""Just enough TOML writing for the configs fpmon generates (agent drills, the demo fleet):
top-level keys, tables, arrays of tables. The standard library reads TOML but cannot write it.

    dumps({"node": "n1", "endpoints": {"intake": "tcp://..."}, "nodes": [{...}, {...}]})
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))  # a JSON string is a valid TOML basic string
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")


def _table_array(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and isinstance(v[0], dict)


def dumps(doc: dict[str, Any]) -> str:
    lines = [
        f"{k} = {value(v)}" for k, v in doc.items() if not (isinstance(v, dict) or _table_array(v))
    ]
    for k, v in doc.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines += [f"{kk} = {value(vv)}" for kk, vv in v.items()]
        elif _table_array(v):
            for item in v:
                lines.append(f"\n[[{k}]]")
                lines += [f"{kk} = {value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"
