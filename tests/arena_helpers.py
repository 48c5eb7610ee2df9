"""Shared helpers for end-to-end tests: a dataset on disk and a run config pointing at the simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from arena_engine.config import RunConfig, config_from_dict
from arena_engine.demo import write_demo_dataset


def dataset(tmp_path: Path, queries: int) -> Path:
    return write_demo_dataset(tmp_path / "data" / "general_qa", queries)


def arena_config(api_url: str, run_dir: Path, data: Path, models: list[str], *, baseline: str | None = None,
                 judge: str = "sim-judge", rounds: int = 200, **run: Any) -> RunConfig:
    return config_from_dict(
        {
            "run": {"output_dir": str(run_dir), "seed": 1, **run},
            "datasets": [{"name": "general_qa", "path": str(data)}],
            # the simulator listens on a new port each time: pin the identities so reruns reuse the answers
            "models": [{"name": m, "api_url": api_url, "identity": m, "concurrency": 16, "max_attempts": 8,
                        "generation": {"temperature": 0.0, "max_tokens": 256}} for m in models],
            "arena": {"baseline": baseline or models[0]},
            "judge": {"name": judge, "api_url": api_url, "identity": judge, "concurrency": 32, "max_attempts": 8},
            "rating": {"rounds": rounds},
        },
        source="<test>",
    )


def write_small_demo_config(path: Path, api_url: str, output_dir: Path, data: Path) -> Path:
    """A JSON config file a user could write: the demo's baseline and strong model and its judge at
    concurrency 4, 20 bootstrap rounds, run folder ``output_dir``."""
    def ep(name: str) -> dict[str, object]:
        return {"name": name, "api_url": api_url, "concurrency": 4}

    config = {"run": {"output_dir": str(output_dir), "seed": 1},
              "datasets": [{"name": "general_qa", "path": str(data)}],
              "models": [ep("sim-base"), ep("sim-strong")], "arena": {"baseline": "sim-base"},
              "judge": ep("sim-judge"), "rating": {"rounds": 20}}
    path.write_bytes(orjson.dumps(config))
    return path
