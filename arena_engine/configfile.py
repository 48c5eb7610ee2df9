"""Reading a config file (ours or the simulator's): TOML, or JSON for a ``.json`` file."""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from .errors import ConfigError


def read_config_file(path: str | Path, what: str = "config file") -> Any:
    """Parsed TOML (or JSON for ``*.json``); a :class:`ConfigError` naming the file if unreadable or invalid."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    is_json = path.suffix.lower() == ".json"
    try:
        return orjson.loads(raw) if is_json else tomllib.loads(raw.decode("utf-8-sig"))
    except (orjson.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'TOML'}: {exc}") from None


def did_you_mean(key: str, known: Iterable[str]) -> str:
    """``"did you mean 'concurrency'?"`` for the known key nearest to a misspelt one, or ``""``."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?" if close else ""
