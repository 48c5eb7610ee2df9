"""How a config dataclass's field is a key of the config file: the per-field metadata both the loader
(`config_loader`) and the writer of the run folder's config.json (`config_dump`) walk.

A field with ``key(...)`` metadata is a config key; one without is not (it is derived, or only the
library sets it). Its default is the field's own, stated once, unless the config's differs from the
library's (``config_default``). Pure values: no runtime imports.
"""

from __future__ import annotations

import functools
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any, Literal

__all__ = ["DERIVED", "Key", "config_default", "config_fields", "key", "reference", "spec"]


class _Marker:
    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


#: The loader computes the default from other keys (a dataset's name from its path, a model id from
#: the entry's name, the baseline from the first model).
DERIVED: Any = _Marker("DERIVED")
_FIELDS: Any = _Marker("the field's default")  # Key.config_default unset: the field's own default is the config's

Check = Literal["", "positive", "non_negative", "finite", "choice"]
Dump = Literal["always", "not_none", "non_empty", "changed", "never"]


@dataclass(frozen=True)
class Key:
    """One config key: its name in the file, what the loader accepts, how config.json writes it."""

    name: str = ""  # the key in the file ("": the field's name)
    kind: Any = None  # the type(s) the file's value must have: str, int, float, bool, dict, list
    check: Check = ""  # "positive": > 0; "non_negative": >= 0; "finite"; "choice": one of `choices`
    choices: tuple[str, ...] = ()
    ceiling: int | None = None  # with "positive": at most this (an error above it, not a cap)
    bounds: tuple[float, float, bool, bool] | None = None  # (low, high, low included, high included)
    bounds_text: str = ""  # the bounds as the error says them: "between 0 and 1"
    config_default: Any = _FIELDS  # the config's default where it is not the field's own
    required: bool = False
    table: str = ""  # the sub-table of the parent's table the key sits in ("run", "arena")
    of: type | None = None  # the dataclass of a nested table (or of a flat group: `flat`)
    flat: bool = False  # the nested dataclass's keys sit in this same table (an endpoint's limits)
    only_with: tuple[str, str] | None = None  # (sibling field, value): the key is used only then
    also: tuple[tuple[str, Any], ...] = ()  # more keys the field is read from, with their defaults
    secret: bool = False  # names environment variables: config.json keeps the names, never a value
    dump: Dump = "always"  # written to config.json always, unless None, unless empty, unless the default
    custom: bool = False  # read by its own code in config_loader (config_dump may have its own too)
    doc: str = ""


def key(default: Any = MISSING, *, factory: Any = MISSING, hash: bool | None = None, **spec: Any) -> Any:
    """A dataclass field that is a config key: ``rounds: int = key(1000, check="positive", kind=int)``."""
    meta = {"config": Key(**spec)}
    if factory is not MISSING:
        return field(default_factory=factory, hash=hash, metadata=meta)
    return field(default=default, hash=hash, metadata=meta)


def spec(f: Field[Any]) -> Key:
    k: Key = f.metadata["config"]
    return k if k.name else Key(**{**k.__dict__, "name": f.name})


@functools.cache
def config_fields(cls: type) -> tuple[tuple[Field[Any], Key], ...]:
    """The fields of ``cls`` that are config keys, in order, with their metadata (names filled in)."""
    return tuple((f, spec(f)) for f in fields(cls) if "config" in f.metadata)


def config_default(f: Field[Any], k: Key) -> Any:
    """The value a config that leaves the key out gets (MISSING: required; DERIVED: from other keys)."""
    if k.config_default is not _FIELDS:
        return k.config_default
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def reference(cls: type, table: str = "") -> dict[str, dict[str, Any]]:
    """``{table path: {key: default}}`` of every key a ``cls`` table accepts (flat groups merged in,
    sub-tables such as ``[run]`` under their own path); what docs/config.md is checked against."""
    out: dict[str, dict[str, Any]] = {table: {}}
    for f, k in config_fields(cls):
        if k.flat and k.of is not None:
            for path, keys in reference(k.of, table).items():
                out.setdefault(path, {}).update(keys)
            continue
        where = f"{table}.{k.table}" if table and k.table else (k.table or table)
        if where != table:
            out[table].setdefault(k.table, {})  # the sub-table itself is a key, `{}` by default
        out.setdefault(where, {})[k.name] = config_default(f, k)
        out[where].update(dict(k.also))
    return out
