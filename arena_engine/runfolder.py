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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import orjson

from .config import JudgeConfig, RunConfig, config_from_dict
from .endpoint_config import EnvVar
from .errors import CheckpointError, ConfigError
from .stop_rules import stop_dict

CONFIG_FILE = "config.json"
REPORT_DIR = "report"


def _endpoint_dict(endpoint: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"api_url": endpoint.api_url, "model": endpoint.model}
    if not endpoint.limits.auto:  # no concurrency in the config: found as the run goes
        out["concurrency"] = endpoint.limits.concurrency
    if endpoint.api_key_env:
        out["api_key_env"] = endpoint.api_key_env
    for key, value in (("rpm", endpoint.limits.rpm), ("tpm", endpoint.limits.tpm)):
        if value is not None:
            out[key] = value
    if not endpoint.limits.adaptive:  # on by default
        out["adaptive_concurrency"] = False
    out.update(max_attempts=endpoint.retry.max_attempts, retry_max_time=endpoint.retry.max_time,
               connect_timeout=endpoint.timeouts.connect, read_timeout=endpoint.timeouts.read,
               timeout=endpoint.timeouts.total)
    if endpoint.extra_headers:  # secrets as the names of their variables: {"env": "AZURE_KEY"}
        out["extra_headers"] = {h: {"env": v.name} if isinstance(v, EnvVar) else v
                                for h, v in endpoint.extra_headers.items()}
    if endpoint.query_params:
        out["query_params"] = dict(endpoint.query_params)
    if endpoint.extra_body:
        out["extra_body"] = dict(endpoint.extra_body)
    if endpoint.batch is not None:
        out["mode"] = "batch"
        out["batch"] = asdict(endpoint.batch)
    return out


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    """The config in the file format, so :func:`config_from_dict` reads it back unchanged."""
    models = []
    for m in cfg.models:
        entry: dict[str, Any] = {"name": m.name}
        if m.evalscope_report is not None:
            entry["evalscope_report"] = str(m.evalscope_report)
            if m.evalscope_mismatch != "error":
                entry["evalscope_mismatch"] = m.evalscope_mismatch
            entry["model"] = m.endpoint.model
        else:
            entry.update(_endpoint_dict(m.endpoint))
        entry["generation"] = dict(m.generation)
        for key in ("price_in", "price_out", "identity", "reuse_answers_of", "system_prompt"):
            if getattr(m, key) is not None:
                entry[key] = getattr(m, key)
        if m.system_prompt_combine != "prepend":
            entry["system_prompt_combine"] = m.system_prompt_combine
        models.append(entry)
    judges = [_judge_dict(j) for j in cfg.panel_judges]
    run: dict[str, Any] = {"output_dir": str(cfg.output_dir), "seed": cfg.seed, "mode": cfg.mode,
                           "fsync_interval": cfg.fsync_interval}
    if cfg.max_pairs_per_query is not None:
        run["max_pairs_per_query"] = cfg.max_pairs_per_query
    if cfg.queries_in_flight is not None:
        run["queries_in_flight"] = cfg.queries_in_flight
    return {
        "run": run,
        "datasets": [
            {"name": d.name, "path": str(d.path), **({"subsets": list(d.subsets)} if d.subsets is not None else {}),
             **({"allow_empty": True} if d.allow_empty else {})}
            for d in cfg.datasets
        ],
        "models": models,
        "arena": {"baseline": cfg.baseline, **({"stop": stop_dict(cfg.stop)} if cfg.stop.active else {})},
        **({"judges": judges, "panel": _panel_dict(cfg)} if cfg.judges else {"judge": judges[0]}),
        "rating": asdict(cfg.rating),
    }


def _judge_dict(j: JudgeConfig) -> dict[str, Any]:
    judge: dict[str, Any] = {"name": j.name, **_endpoint_dict(j.endpoint), "generation": dict(j.generation),
                             "parse_retries": j.parse_retries, "structured_output": j.structured_output}
    for key in ("system_prompt", "template", "price_in", "price_out", "identity"):
        if getattr(j, key) is not None:
            judge[key] = getattr(j, key)
    if j.related_to:
        judge["related_to"] = list(j.related_to)
    return judge


def _panel_dict(cfg: RunConfig) -> dict[str, Any]:
    p = cfg.panel
    out: dict[str, Any] = {"cascade": list(p.cascade), "calibration": p.calibration} if p.cascade else {
        "combine": p.combine}
    if p.human_labels is not None:
        out["human_labels"] = str(p.human_labels)
    return out


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
