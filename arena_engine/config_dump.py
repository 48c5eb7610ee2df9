"""The config in the file format (the run folder's config.json), by walking the config values' fields.

What a field's metadata (`config_fields.key`) says decides each key: its name, whether it is written
always, only when set, only when not empty or only when not the default. Secrets never appear: an
endpoint names the environment variables that hold them (`api_key_env`, `{"env": NAME}` headers), and
only the names are written. :func:`config_to_dict` is read back unchanged by `config_from_dict`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .config_fields import config_default, config_fields
from .config_values import ModelConfig, RunConfig
from .endpoint_config import Endpoint, EnvVar, Limits

__all__ = ["config_to_dict"]

Hook = Callable[[Any, Any], Mapping[str, Any]]  # (the object, the field's value) -> the keys to write


def _plain(value: Any) -> Any:
    """A value as JSON holds it: paths as strings, tuples as lists, an EnvVar as ``{"env": NAME}``."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, EnvVar):
        return {"env": value.name}
    if isinstance(value, Mapping):
        return {k: {"env": v.name} if isinstance(v, EnvVar) else v for k, v in value.items()}
    return value


def _fields_dict(obj: Any, hooks: Mapping[str, Hook] | None = None, *, table: str = "") -> dict[str, Any]:
    """The keys of ``obj``'s fields (those in its sub-table ``table``) that its metadata says to write."""
    hooks = hooks or {}
    out: dict[str, Any] = {}
    cls: type = type(obj)
    for f, k in config_fields(cls):
        if k.table != table:
            continue
        value = getattr(obj, f.name)
        if f.name in hooks:
            out.update(hooks[f.name](obj, value))
        elif k.flat:
            out.update(_fields_dict(value, hooks))
        elif k.only_with is not None and getattr(obj, k.only_with[0]) != k.only_with[1]:
            continue
        elif (k.dump == "always" or (k.dump == "not_none" and value is not None)
              or (k.dump == "non_empty" and value) or (k.dump == "changed" and value != config_default(f, k))):
            out[k.name] = _plain(value)
    return out


def _concurrency(limits: Limits, value: int) -> dict[str, Any]:
    return {} if limits.auto else {"concurrency": value}  # no concurrency in the config: found as the run goes


def _batch(endpoint: Endpoint, batch: Any) -> dict[str, Any]:
    return {} if batch is None else {"mode": "batch", "batch": _fields_dict(batch)}


_ENDPOINT: dict[str, Hook] = {"concurrency": _concurrency, "batch": _batch}


def _endpoint(entry: Any, endpoint: Endpoint) -> dict[str, Any]:
    if isinstance(entry, ModelConfig) and entry.evalscope_report is not None:  # imported: no endpoint
        return {"model": endpoint.model}
    return _fields_dict(endpoint, _ENDPOINT)


def _mismatch(model: ModelConfig, value: str) -> dict[str, Any]:
    """Only beside an `evalscope_report` (a model without one refuses the key), and only if not the default."""
    f, k = next((f, k) for f, k in config_fields(ModelConfig) if f.name == "evalscope_mismatch")
    return {k.name: value} if model.evalscope_report is not None and value != config_default(f, k) else {}


def _panel(cfg: RunConfig) -> dict[str, Any]:
    out = _fields_dict(cfg.panel)
    out.pop("combine" if cfg.panel.cascade else "calibration")  # a cascade rates by its last judge
    return out


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config in the file format, so :func:`config_from_dict` reads it back unchanged."""
    entry: dict[str, Hook] = {"endpoint": _endpoint, "evalscope_mismatch": _mismatch}
    judges = [_fields_dict(j, entry) for j in cfg.panel_judges]
    arena = _fields_dict(cfg, {"stop": lambda _, s: {"stop": _fields_dict(s)} if s.active else {}}, table="arena")
    return {
        "run": _fields_dict(cfg, table="run"),
        "datasets": [_fields_dict(d) for d in cfg.datasets],
        "models": [_fields_dict(m, entry) for m in cfg.models],
        "arena": arena,
        **({"judges": judges, "panel": _panel(cfg)} if cfg.judges else {"judge": judges[0]}),
        "rating": _fields_dict(cfg.rating),
    }
