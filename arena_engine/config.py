"""Run configuration: the values (`config_values`), read from a TOML/JSON file by `config_loader`.

Every unknown key, wrong type and missing required key is a :class:`ConfigError` that names the file
and the key. API keys are referenced by the name of an environment variable; their values never sit in
a config object, a checkpoint or a report. The run folder's config.json is written by `config_dump`.

This module is the one the rest of the package and its users import from; loading a config needs
only the value modules (no aiohttp, client or limiter).
"""

from __future__ import annotations

from .config_loader import Reader, config_from_dict, load_config
from .config_values import (
    MAX_CONCURRENCY,
    MAX_QUERIES_IN_FLIGHT,
    DatasetConfig,
    JudgeConfig,
    Mode,
    ModelConfig,
    OverallMode,
    RatingConfig,
    RunConfig,
)

_Reader = Reader  # the reader of one table (tests record the keys the loader reads through it)

__all__ = ["MAX_CONCURRENCY", "MAX_QUERIES_IN_FLIGHT", "DatasetConfig", "JudgeConfig", "Mode", "ModelConfig",
           "OverallMode", "RatingConfig", "RunConfig", "config_from_dict", "load_config"]
