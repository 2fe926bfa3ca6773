"""Frozen-dataclass configs from YAML files and ``key=value`` overrides.

One generic loader serves every config class: unknown keys and values of the wrong type
are refused with the valid keys listed, so a typo in a YAML preset never silently falls
back to a default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from mecca.errors import ConfigError

C = TypeVar("C")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Convert YAML/CLI values to the field's annotated type (tuples, floats, literals)."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not allowed", hint=f"choose one of {args}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, key) for v in value)
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:  # PyYAML (YAML 1.1) reads "1e-3" as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if hint in (int, str, bool) and not isinstance(value, hint):
        raise ConfigError(f"{key} must be {hint.__name__}, got {value!r}")
    return value


def build_config(cls: type[C], values: Mapping[str, Any]) -> C:
    """``cls(**values)`` with the keys checked and the values coerced to the field types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {unknown}", hint=f"valid: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], k) for k, v in values.items()}
    return cls(**kwargs)


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["lr=1e-4", "grid=[55,55,30]"]`` -> dict, each value parsed as YAML."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not key=value")
        out[key.strip()] = yaml.safe_load(text)
    return out


def read_settings(path: Path | None) -> dict[str, Any]:
    """The settings in a YAML config file ({} for None); ConfigError for a file that is
    missing, not YAML or not a mapping."""
    if path is None:
        return {}
    try:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError("config file not found", path=path) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", path=path) from None
    if not isinstance(loaded, dict):
        raise ConfigError("a config file must hold a mapping of settings", path=path)
    return dict(loaded)


def load_config(
    cls: type[C],
    path: Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    *,
    drop: Sequence[str] = (),
) -> C:
    """Config from an optional YAML file, then ``overrides`` on top; keys in ``drop`` (read
    by the caller, such as a file's ``method``) are left out."""
    values = read_settings(path)
    values.update(dict(overrides or {}))
    for key in drop:
        values.pop(key, None)
    return build_config(cls, values)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict (tuples as lists) for YAML/JSON/checkpoints."""

    def plain(v: Any) -> Any:
        return [plain(x) for x in v] if isinstance(v, tuple | list) else v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}
