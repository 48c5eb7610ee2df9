"""The run folder's layout, and the config saved in it so `report`/`rate` need only the folder.

    RUN_DIR/
      config.json            the resolved config, in the config-file format (key *names* only, never values)
      checkpoints/*.jsonl    generations, judgments, failures (arena_engine.store)
      runs.jsonl             a start and an end line per process that sent (arena_engine.runlog)
      results.snapshot       the last walk's tally and what it was computed from (arena_engine.snapshot)
      report/                report_table.txt, leaderboard.txt, report.json, report.html
      .lock                  held while a process writes the folder
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

import orjson

from .config import RunConfig, config_from_dict
from .config_dump import config_to_dict
from .errors import CheckpointError, ConfigError

__all__ = ["CONFIG_FILE", "REPORT_DIR", "config_to_dict", "fresh_dir", "load_run_config", "save_config"]

CONFIG_FILE = "config.json"
REPORT_DIR = "report"


def save_config(cfg: RunConfig, run_dir: Path) -> None:
    tmp = run_dir / (CONFIG_FILE + ".tmp")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(orjson.dumps(config_to_dict(cfg), option=orjson.OPT_INDENT_2))
        os.replace(tmp, run_dir / CONFIG_FILE)
    except OSError as exc:  # a full or read-only disk: the old config.json stays as it was
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CheckpointError(f"cannot save the config in {run_dir}: {exc.strerror or exc}") from exc


def load_run_config(run_dir: Path) -> RunConfig:
    """The config a run folder was made with (its output_dir is the folder itself, wherever it is now)."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        data = orjson.loads(path.read_bytes())
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    return config_from_dict(data, source=str(path), base_dir=run_dir).with_output_dir(run_dir.resolve())


def fresh_dir(output_dir: Path) -> Path:
    """A new folder beside ``output_dir`` for ``--fresh`` (the old run stays as it is)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate = output_dir.with_name(f"{output_dir.name}-{stamp}")
    n = 1
    while candidate.exists():
        n += 1
        candidate = output_dir.with_name(f"{output_dir.name}-{stamp}-{n}")
    return candidate
