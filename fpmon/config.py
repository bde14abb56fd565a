"""The one config layer: every component's TOML file is read, checked and resolved here.

A component declares its file as one `msgspec.Struct` of sections (`Section` subclasses: a
misspelt key is an error, never a silent default), with ranges as `msgspec.Meta` bounds and
enumerations as `Literal`s, and loads it with `load(path, Config, example=...)`. The rules,
the same for the agent, the replay daemon, the hub and the monitor (docs/CONFIG.md):

- **Errors are one line naming the file, the section and the key**:
  `replay.toml: [replay] unknown key 'devcie'; known: name, store, ...`,
  `agent.toml: [batching] max_batch = 0 must be >= 1`.
- **Paths**: a relative path (a field typed `Path`/`SecretPath`, its default included) is
  relative to the folder of the config file, not to the working directory. `""` means unset.
- **Secrets**: a file holding a secret must not be readable or writable by others, and neither
  may a config that holds a secret inline (`SecretStr`) or names one (`SecretPath`): refused
  with the `chmod 600` that fixes it (`check_private`).

After decoding, a config's `check()` (when it has one) applies the rules that span sections;
it raises `Invalid`, and the message gets the file's name in front.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
import types
import typing
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from fpmon.errors import FpmonError

T = TypeVar("T")

# Ranges every component uses (errors read `key = value must be >= 1`).
Positive = Annotated[int, msgspec.Meta(ge=1)]
NonNegative = Annotated[int, msgspec.Meta(ge=0)]
PositiveFloat = Annotated[float, msgspec.Meta(gt=0)]
NonNegativeFloat = Annotated[float, msgspec.Meta(ge=0)]
Fraction = Annotated[float, msgspec.Meta(ge=0, le=1)]


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A table of a config file (or the whole file): only its declared keys are accepted."""


class Invalid(FpmonError):
    """A rule spanning keys, raised by a config's `check()`; `load` puts the file in front."""


class SecretPath(type(Path())):  # type: ignore[misc]
    """A path to a file holding a secret: the config naming it must be private, and so must
    the file (checked here when it exists, and again by whoever reads it)."""


class SecretStr(str):
    """A secret written in the config itself: the config must be private."""

    @classmethod
    def from_toml(cls, v: Any) -> SecretStr:
        if not isinstance(v, str):
            raise TypeError(f"expected a string, got {type(v).__name__}")
        return cls(v)


class PublicKeyHex(bytes):
    """An Ed25519 public key written as 64 hex digits (a `signing.pub` / `.key.pub` file)."""

    @classmethod
    def from_toml(cls, v: Any) -> PublicKeyHex:
        try:
            raw = bytes.fromhex(v) if isinstance(v, str) else b""
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise ValueError("expected an Ed25519 public key as 64 hex digits")
        return cls(raw)


def check_private(path: Path, what: str) -> None:
    """Refuse a secret others can read or write: a leaked signing key lets anyone forge."""
    if not path.is_file():
        raise FpmonError(f"{what} {path} does not exist (or is not a file)")
    if mode := _world_mode(path):
        raise FpmonError(
            f"{what} {path} is world-readable (mode {mode:o}): "
            f"run `chmod 600 {path}` and start again"
        )


def _world_mode(path: Path) -> int:
    """The file's mode when others may read or write it, else 0."""
    mode = path.stat().st_mode
    return stat.S_IMODE(mode) if mode & (stat.S_IROTH | stat.S_IWOTH) else 0


def read_toml(path: str | os.PathLike[str], example: str) -> tuple[Path, dict[str, Any]]:
    """A config file's document, or a one-line error (naming the example to start from)."""
    p = Path(path)
    if not p.is_file():
        raise FpmonError(f"{p}: no such config file; start from {example}")
    try:
        return p, tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise FpmonError(f"{p}: not valid TOML ({e}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise FpmonError(f"{p}: cannot be read ({e})") from None


def load(path: str | os.PathLike[str], cls: type[T], *, example: str) -> T:
    """Read, decode and check a config file (`example`: the file under deploy/ to start from)."""
    p, doc = read_toml(path, example)
    return decode(doc, cls, p)


def decode(doc: dict[str, Any], cls: type[T], source: str | os.PathLike[str]) -> T:
    """`doc` (a TOML document as `tomllib` gives it) as a `cls`, by the rules above; `source`
    is the file it came from (for messages, for relative paths, for the secret policy: a
    document that was never written to `source` is not checked for its mode)."""
    src = Path(source)
    try:
        cfg = msgspec.convert(_unset_empty_paths(doc, cls), cls, dec_hook=_dec_hook)
    except msgspec.ValidationError as e:
        raise FpmonError(f"{src}: {_explain(str(e), doc, cls)}") from None
    secrets: list[str] = []
    try:
        _resolve(cfg, src.parent, "", secrets)
        if secrets and src.is_file() and (mode := _world_mode(src)):
            raise FpmonError(
                f"names secrets ({', '.join(secrets)}) but is world-readable (mode {mode:o}): "
                f"run `chmod 600 {src}` and start again"
            )
        check = getattr(cfg, "check", None)
        if check is not None:
            check()
    except FpmonError as e:
        raise FpmonError(f"{src}: {e}") from None
    return cfg


# -- decoding -------------------------------------------------------------------------------


def _dec_hook(typ: type, value: Any) -> Any:
    if isinstance(typ, type) and issubclass(typ, Path):
        if not isinstance(value, str):
            raise TypeError(f"expected a path (a string), got {type(value).__name__}")
        return typ(value)
    from_toml = getattr(typ, "from_toml", None)
    if from_toml is None:
        raise NotImplementedError(typ)
    return from_toml(value)


def _unset_empty_paths(doc: Any, cls: Any) -> Any:
    """`doc` without the paths written `""` (their defaults apply: unset, mostly)."""
    t = _strip(cls)
    if isinstance(doc, list) and typing.get_origin(t) in (list, tuple):
        return [_unset_empty_paths(x, typing.get_args(t)[0]) for x in doc]
    if not (isinstance(doc, dict) and _is_struct(t)):
        return doc
    types_ = {f.encode_name: f.type for f in msgspec.structs.fields(t)}
    out = {}
    for k, v in doc.items():
        ft = _strip(types_.get(k, Any))
        if v == "" and isinstance(ft, type) and issubclass(ft, Path):
            continue
        out[k] = _unset_empty_paths(v, ft)
    return out


def _resolve(obj: Any, base: Path, where: str, secrets: list[str]) -> None:
    """The path rule, applied in place to every `Path` in a decoded config (defaults too), and
    the secret policy's list of what names a secret."""
    if not isinstance(obj, msgspec.Struct):
        return
    for f in msgspec.structs.fields(obj):
        v = getattr(obj, f.name)
        key = f"{where}{f.encode_name}"
        if isinstance(v, Path):
            if not v.is_absolute():
                v = type(v)(base / v).resolve()
                setattr(obj, f.name, v)
            if isinstance(v, SecretPath):
                secrets.append(key)
                if v.is_file():
                    check_private(v, key)
        elif isinstance(v, SecretStr):
            secrets.append(key)
        elif isinstance(v, msgspec.Struct):
            _resolve(v, base, f"[{f.encode_name}] ", secrets)
        elif isinstance(v, list | tuple):
            for i, x in enumerate(v):
                _resolve(x, base, f"[[{f.encode_name}]] #{i + 1} ", secrets)


# -- one line per error ----------------------------------------------------------------------

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_STEP = re.compile(r"\.(\w+)|\[(\d+)\]|\[\.\.\.\]")


def _explain(err: str, doc: dict[str, Any], cls: type) -> str:
    """msgspec's `Expected `int` >= 1 - at `$.limits.max_batch`` as the config's author reads
    it: `[limits] max_batch = 0 must be >= 1`."""
    m = _AT.match(err)
    assert m is not None
    msg, steps = m["msg"], [s for s in _STEP.findall(m["path"] or "")]
    names: list[str | int] = []
    for name, index in steps:
        names.append(name if name else int(index) if index else "...")
    where = _where(names, cls)
    if u := re.match(r"Object contains unknown field `(.*)`", msg):
        known = ", ".join(f.encode_name for f in msgspec.structs.fields(_type_at(names, cls)))
        at = f"{where} " if where else ""
        return f"{at}unknown key {u[1]!r}; known: {known}"
    if u := re.match(r"Object missing required field `(.*)`", msg):
        return f"{where + ' ' if where else ''}lacks the required key {u[1]!r}"
    value = _value_at(names, doc)
    shown = f"{where.strip('[]') if len(names) == 1 else where} = {_show(value)}"
    if u := re.match(r"Expected `(\w+)`, got `(\w+)`", msg):
        return f"{shown}: expected {_kind(u[1])}, got {_kind(u[2])}"
    if u := re.match(r"Expected `\w+` (.*)", msg):
        return f"{shown} must be {u[1]}"
    if msg.startswith("Invalid enum value"):
        choices = [str(c) or '""' for c in _literal(_type_at(names, cls))]
        return f"{shown}: use one of {', '.join(choices)}"
    return f"{where}: {msg}" if where else msg


def _where(names: list[str | int], cls: type) -> str:
    """`[section] key`, `[[node]] #2 key`, or a top-level `key`."""
    names = [n for n in names if n != "..."]  # msgspec does not name a table's keys
    if not names:
        return ""
    head, rest = names[0], names[1:]
    top = _type_at([head], cls)
    if not rest and not (_is_struct(top) or _is_list_of_structs(top) or _is_table(top)):
        return str(head)
    if rest and isinstance(rest[0], int):
        out, rest = f"[[{head}]] #{rest[0] + 1}", rest[1:]
    else:
        out = f"[{head}]"
    keys = "".join(f"[{n}]" if isinstance(n, int) else f".{n}" for n in rest)[1:]
    return f"{out} {keys}" if keys else out


def _strip(t: Any) -> Any:
    """The type under `Annotated[...]` and `X | None`."""
    while True:
        if typing.get_origin(t) is Annotated:
            t = typing.get_args(t)[0]
            continue
        if typing.get_origin(t) in (typing.Union, types.UnionType):
            rest = [a for a in typing.get_args(t) if a is not type(None)]
            if len(rest) == 1:
                t = rest[0]
                continue
        return t


def _is_struct(t: Any) -> bool:
    t = _strip(t)
    return isinstance(t, type) and issubclass(t, msgspec.Struct)


def _is_table(t: Any) -> bool:
    return typing.get_origin(_strip(t)) is dict


def _is_list_of_structs(t: Any) -> bool:
    t = _strip(t)
    return typing.get_origin(t) in (list, tuple) and _is_struct(typing.get_args(t)[0])


def _type_at(names: list[str | int], cls: type) -> Any:
    t: Any = cls
    for n in names:
        t = _strip(t)
        if isinstance(n, str) and n != "..." and _is_struct(t):
            by_name = {f.encode_name: f.type for f in msgspec.structs.fields(t)}
            t = by_name.get(n, Any)
        elif typing.get_origin(t) in (list, tuple, dict):
            t = typing.get_args(t)[-1]
        else:
            return Any
    return _strip(t)


def _value_at(names: list[str | int], doc: Any) -> Any:
    v = doc
    for n in names:
        try:
            v = v[n]
        except (KeyError, IndexError, TypeError):
            return "?"
    return v


def _literal(t: Any) -> tuple[Any, ...]:
    if typing.get_origin(t) is typing.Literal:
        return typing.get_args(t)
    return tuple(x for a in typing.get_args(t) for x in _literal(a))


def _show(v: Any) -> str:
    return repr(v) if isinstance(v, str) else "a table" if isinstance(v, dict) else str(v)


def _kind(msgspec_name: str) -> str:
    return _KINDS.get(msgspec_name, msgspec_name)


_KINDS = {
    "object": "a table",
    "array": "an array",
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
}
