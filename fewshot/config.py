"""Frozen (nested) dataclass configs: load from TOML, override from the command line, dump back to TOML.

    cfg = load_config(TrainConfig, "stage1.toml", ["lr=0.1", "augment.hflip=0"])
    atomic_write_text(out / "config.resolved.toml", to_toml(cfg))

Values are checked against the field types (int, float, bool, str, Path, Literal, X | None, tuple, list,
dict[str, X], nested dataclasses); unknown keys and bad values raise :class:`ConfigError` naming the key,
the file and the valid keys. TOML has no null, so ``None`` is written as a comment and read back as the
field's default (or from the strings "none"/"null" on the command line).
"""
from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

from fewshot.utils.errors import UserError

T = TypeVar("T")
_NONE_WORDS = ("none", "null")
_TRUE_WORDS = ("true", "1", "yes", "on")
_FALSE_WORDS = ("false", "0", "no", "off")


class ConfigError(UserError):
    """A config file or override that does not fit the config's dataclass."""


def load_config(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = ()) -> T:
    """``cls`` from the TOML file at ``path`` (defaults when None), then ``key.sub=value`` overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: not valid TOML ({e})") from e
    return apply_overrides(from_dict(cls, data, where=str(path or "<defaults>")), overrides)


def from_dict(cls: type[T], data: Mapping[str, Any], *, where: str = "<dict>", prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a (TOML) mapping; missing keys take the field defaults."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: [{prefix.rstrip('.') or 'top level'}] must be a table, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"valid keys: {', '.join(valid_keys(cls, prefix))}")
    kwargs = {name: _coerce(value, hints[name], prefix + name, where) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: {e}") from e


def apply_overrides(obj: T, overrides: Sequence[str]) -> T:
    """Return a copy of the dataclass ``obj`` with each ``"key.sub=value"`` applied (typed by the field)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. augment.hflip=0.5)")
        obj = _replace_path(obj, key.split("."), raw.strip(), key, type(obj))
    return obj


def valid_keys(cls: type, prefix: str = "") -> list[str]:
    """All dotted leaf keys of a dataclass type, e.g. ``["epochs", "augment.hflip", ...]``."""
    hints = typing.get_type_hints(cls)
    keys = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        keys += valid_keys(tp, f"{prefix}{f.name}.") if _is_dataclass_type(tp) else [prefix + f.name]
    return keys


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass (what checkpoints carry)."""
    return dataclasses.asdict(obj)


def to_toml(obj: Any) -> str:
    """TOML text of a dataclass or nested mapping (str, int, float, bool, Path, lists, tables)."""
    data = to_dict(obj) if dataclasses.is_dataclass(obj) else dict(obj)
    lines: list[str] = []
    _write_table(data, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _replace_path(obj: Any, parts: list[str], raw: str, key: str, root: type) -> Any:
    hints = typing.get_type_hints(type(obj))
    name = parts[0]
    if name not in hints or not any(f.name == name for f in dataclasses.fields(obj)):
        raise ConfigError(f"override {key}={raw}: unknown key {key!r}; valid keys: {', '.join(valid_keys(root))}")
    tp = hints[name]
    if len(parts) > 1:
        if not _is_dataclass_type(tp):
            raise ConfigError(f"override {key}={raw}: {name!r} is a value, not a table; "
                              f"valid keys: {', '.join(valid_keys(root))}")
        value = _replace_path(getattr(obj, name), parts[1:], raw, key, root)
    else:
        if _is_dataclass_type(tp):
            raise ConfigError(f"override {key}={raw}: {key!r} is a table; set one of its keys: "
                              f"{', '.join(valid_keys(tp, key + '.'))}")
        value = _coerce(raw, tp, key, "command line", cli=True)
    try:
        return dataclasses.replace(obj, **{name: value})
    except (TypeError, ValueError) as e:
        raise ConfigError(f"override {key}={raw}: {e}") from e


def _coerce(value: Any, tp: Any, key: str, where: str, cli: bool = False) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} = {value!r} is not {expected}")

    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        return from_dict(tp, value, where=where, prefix=key + ".")
    if origin in (Union, types.UnionType):
        if type(None) in args and (value is None or cli and str(value).lower() in _NONE_WORDS):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, option, key, where, cli)
            except ConfigError:
                continue
        raise bad(f"a {_type_name(tp)}")
    if origin is Literal:
        for option in args:
            if value == option or cli and str(option) == value:
                return option
        raise bad(f"one of {', '.join(repr(a) for a in args)}")
    if cli and isinstance(value, str) and tp not in (str, Path):
        value = _parse_cli_value(value, tp)
    if tp in (bool, int, float, str, Path):
        return _coerce_scalar(value, tp, bad)
    if origin in (tuple, list, dict) or tp is dict:
        return _coerce_collection(value, tp, key, where, bad)
    raise ConfigError(f"{where}: {key} has a field type {_type_name(tp)} that configs do not support")


def _coerce_scalar(value: Any, tp: type, bad: Callable[[str], ConfigError]) -> Any:
    """``value`` as a bool, int, float, str or Path (``tp``); ints pass as floats, bools as nothing else."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad("a number")
    if isinstance(value, (str, Path)):
        return tp(value)
    raise bad("a string")


def _coerce_collection(value: Any, tp: Any, key: str, where: str, bad: Callable[[str], ConfigError]) -> Any:
    """``value`` as a fixed tuple, a variadic tuple, a list or a dict of ``tp``, items coerced one by one."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad(f"a list ({_type_name(tp)})")
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} values ({_type_name(tp)})")
            return tuple(_coerce(v, a, f"{key}[{i}]", where) for i, (v, a) in enumerate(zip(value, args)))
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if not isinstance(value, Mapping):
        raise bad("a table")
    val_tp = args[1] if args else Any
    return {str(k): _coerce(v, val_tp, f"{key}.{k}", where) for k, v in value.items()}


def _parse_cli_value(raw: str, tp: Any) -> Any:
    # Command-line values are TOML values ("[0.5, 1.0]", "3", "true"); bool also takes yes/no/on/off/1/0.
    if tp is bool and raw.lower() in _TRUE_WORDS + _FALSE_WORDS:
        return raw.lower() in _TRUE_WORDS
    try:
        return tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        return raw


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _write_table(data: Mapping[str, Any], path: list[str], lines: list[str]) -> None:
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if path and (scalars or not tables):
        lines += ["", "[" + ".".join(_toml_key(p) for p in path) + "]"]
    for k, v in scalars.items():
        if v is None:
            lines.append(f"# {_toml_key(k)} is unset (None)")
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v, '.'.join(path + [k]))}")
    for k, v in tables.items():
        _write_table(v, path + [k], lines)


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.match(key) else _toml_str(key)


def _toml_value(v: Any, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (str, Path)):
        return _toml_str(str(v))
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, key) for x in v) + "]"
    raise ConfigError(f"cannot write {key} = {v!r} ({type(v).__name__}) to TOML; "
                      "configs hold str, int, float, bool, paths, lists and tables")


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
