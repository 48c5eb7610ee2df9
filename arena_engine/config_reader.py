"""The strict reader of one table of a config file, and the reading of plain keys by their fields.

Each field's metadata (`config_fields.key`) says its key, the type and range it takes and its default;
:func:`values` reads a table's plain keys from it in field order, and the keys that need more are read
by the hooks the caller gives (`config_loader`, `config_endpoints`). Every unknown key, wrong type and
missing required key is a :class:`ConfigError` that names the file and the key path.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field
from typing import Any

from .config_fields import DERIVED, Key, config_default, config_fields
from .configfile import did_you_mean
from .errors import ConfigError

__all__ = ["Hooks", "Reader", "field_of", "read", "values"]

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "a table", list: "a list"}


class Reader:
    """Reads one table of a config file, checking keys and types, naming the file and the key path."""

    def __init__(self, source: str, path: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {path or 'the top level'} must be a table")
        self.source, self.path, self.table = source, path, table
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.table:
            if required or default is ...:
                raise ConfigError(f"{self.source}: missing required key '{self.where(key)}'")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
            value = float(value)
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be {want}, got {value!r}")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:  # no JSON writer takes it (config.json)
            raise ConfigError(f"{self.source}: '{self.where(key)}' = {value!r} is out of the 64-bit integer range")
        return value

    def choice(self, key: str, options: Sequence[str], default: Any) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be one of {list(options)}, got {value!r}")
        return str(value)

    def positive(self, key: str, kind: type, default: Any, *, ceiling: int | None = None) -> Any:
        value = self.finite(key, kind, default)
        if value is not None and value <= 0:
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be > 0, got {value!r}")
        if value is not None and ceiling is not None and value > ceiling:
            raise ConfigError(
                f"{self.source}: '{self.where(key)}' = {value!r} is above the ceiling of {ceiling}; "
                f"set it to at most {ceiling}"
            )
        return value

    def non_negative(self, key: str, kind: type, default: Any) -> Any:
        value = self.finite(key, kind, default)
        if value is not None and value < 0:
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be >= 0, got {value!r}")
        return value

    def finite(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be a finite number, got {value!r}")
        return value

    def sub(self, key: str, *, required: bool = False) -> Reader | None:
        value = self.get(key, dict, None, required=required)
        return None if value is None else Reader(self.source, self.where(key), value)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            hint = did_you_mean(unknown[0], self.seen)
            raise ConfigError(f"{self.source}: unknown key {self.where(unknown[0])!r}" + (f" ({hint})" if hint else "")
                              + (f" (and {unknown[1:]})" if unknown[1:] else ""))


@functools.cache
def field_of(cls: type, name: str) -> tuple[Field[Any], Key]:
    """The field ``name`` of ``cls`` with its config metadata."""
    return next((f, k) for f, k in config_fields(cls) if f.name == name)


def read(r: Reader, f: Field[Any], k: Key, default: Any = ...) -> Any:
    """One plain key, as its field's metadata says: type, range, default (``default`` for a derived one)."""
    d = config_default(f, k) if default is ... else default
    assert d is not DERIVED, f"{f.name}: the caller gives the derived default"
    d = ... if d is MISSING or k.required else d
    value: Any
    if k.check == "choice":
        value = r.choice(k.name, k.choices, d)
    elif k.check == "positive":
        value = r.positive(k.name, k.kind, d, ceiling=k.ceiling)
    elif k.check == "non_negative":
        value = r.non_negative(k.name, k.kind, d)
    elif k.check == "finite":
        value = r.finite(k.name, k.kind, d)
    else:
        value = r.get(k.name, k.kind, d)
    if k.bounds is not None and value is not None:
        low, high, low_in, high_in = k.bounds
        if not ((low <= value if low_in else low < value) and (value <= high if high_in else value < high)):
            raise ConfigError(f"{r.source}: '{r.where(k.name)}' must be {k.bounds_text}, got {value}")
    return value


Hooks = Mapping[str, Callable[[], Any]]


def values(r: Reader, cls: type, hooks: Hooks | None = None, *, table: str = "",
            defaults: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The keys of one table for the fields of ``cls`` (those in the sub-table ``table`` of it), in
    field order: each plain one by its metadata, a flat group as a dict of its own, the others by
    their ``hooks``."""
    hooks, defaults = hooks or {}, defaults or {}
    out: dict[str, Any] = {}
    for f, k in config_fields(cls):
        if k.table != table:
            continue
        if f.name in hooks:
            out[f.name] = hooks[f.name]()
        elif k.flat and k.of is not None:
            out[f.name] = values(r, k.of, hooks)
        else:
            assert not k.custom, f"{cls.__name__}.{f.name} is read by a hook"
            out[f.name] = read(r, f, k, defaults.get(f.name, ...))
    return out
