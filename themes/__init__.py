"""Dashboard themes: TOML files in this folder, built into Textual `Theme` objects.

A file holds `textual.theme.Theme` keys (name, dark, primary, ..., error) and a
`[variables]` table. fpmon's own variables (`APP_VARIABLES`) are defined here once: a theme
may set them, otherwise they follow the theme's success/error/warning colours.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import TYPE_CHECKING

from fpmon.errors import FpmonError

if TYPE_CHECKING:
    from textual.theme import Theme

THEMES_DIR = Path(__file__).parent
DEFAULT_THEME = "fpmon-dark"
THEME_KEYS = (
    "name", "dark", "primary", "secondary", "accent", "foreground", "background",
    "surface", "panel", "boost", "success", "warning", "error",
)  # fmt: skip
# fpmon's own variables and the Theme colour each one follows when a file leaves it out.
APP_VARIABLES = {
    "fpmon-ok": "success",
    "fpmon-mismatch": "error",
    "fpmon-alert": "warning",
    "fpmon-stale": "secondary",
}


def theme_files(folder: Path = THEMES_DIR) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def available(folder: Path = THEMES_DIR) -> list[str]:
    return list(theme_files(folder))


def load_theme(name: str, folder: Path = THEMES_DIR) -> Theme:
    """Build the named theme, or raise FpmonError naming the themes that exist."""
    from textual.theme import Theme

    files = theme_files(folder)
    path = files.get(name)
    if path is None:
        raise FpmonError(
            f"unknown theme {name!r}; available: {', '.join(files) or 'none'} (files in {folder})"
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise FpmonError(f"theme file {path} is not valid TOML: {e}") from None
    variables = raw.pop("variables", {})
    unknown = set(raw) - set(THEME_KEYS)
    if unknown or not isinstance(variables, dict):
        raise FpmonError(
            f"theme file {path}: unknown key(s) {', '.join(sorted(unknown)) or 'variables'}; "
            f"known: {', '.join(THEME_KEYS)}, [variables]"
        )
    if raw.get("name", name) != name:
        raise FpmonError(f"theme file {path} names itself {raw['name']!r}; rename one of them")
    raw["name"] = name
    if "primary" not in raw:
        raise FpmonError(f"theme file {path}: `primary` colour is required")
    for var, follows in APP_VARIABLES.items():
        variables.setdefault(var, raw.get(follows) or raw["primary"])
    try:
        return Theme(**raw, variables={str(k): str(v) for k, v in variables.items()})
    except (TypeError, ValueError) as e:
        raise FpmonError(f"theme file {path}: {e}") from None


def load_all(folder: Path = THEMES_DIR) -> list:
    return [load_theme(n, folder) for n in available(folder)]
