"""The run folder's config.json: written by walking the config values' fields, read back unchanged,
and the files today's release wrote (tests/data/run_config, made at commit 1caeffd) still load and are
written again as the same JSON object (the order of its keys may differ)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from arena_engine.config import config_from_dict
from arena_engine.config_dump import config_to_dict
from arena_engine.runfolder import load_run_config, save_config

DATA = Path(__file__).resolve().parent / "data" / "run_config"
OLD = sorted(p.stem for p in DATA.glob("*.json"))


def _old(name: str, root: Path) -> dict[str, Any]:
    """An old config.json with its folder (`@ROOT@`) put back, and the files it names made."""
    (root / "labels.jsonl").write_text('{"query_id": "1", "model_a": "cand", "model_b": "base", "winner": "tie"}\n')
    text = (DATA / f"{name}.json").read_text(encoding="utf-8").replace("@ROOT@", str(root))
    data: dict[str, Any] = orjson.loads(text)
    return data


def test_the_old_files_cover_every_kind_of_table() -> None:
    assert OLD == ["majority", "panel", "single", "stop_halfwidth"]


@pytest.mark.parametrize("name", OLD)
def test_an_old_config_json_loads_and_is_written_again_the_same(name: str, tmp_path: Path) -> None:
    data = _old(name, tmp_path)
    cfg = config_from_dict(data, source=f"{name}.json", base_dir=tmp_path)
    assert config_to_dict(cfg) == data
    run = tmp_path / "run"  # and through a run folder, as `report` reads it
    run.mkdir()
    (run / "config.json").write_bytes(orjson.dumps(data))
    again = load_run_config(run)
    assert again.output_dir == run.resolve()
    assert config_to_dict(again.with_output_dir(cfg.output_dir)) == data


def test_the_panel_file_holds_what_it_should(tmp_path: Path) -> None:
    """The richest old file: a batch endpoint, an env-named header, a cascade, adaptive judging."""
    cfg = config_from_dict(_old("panel", tmp_path), source="panel.json", base_dir=tmp_path)
    base, cand, _, imported = cfg.models
    assert base.endpoint.limits.concurrency == 16 and not base.endpoint.limits.adaptive
    assert base.endpoint.extra_headers["api-key"].name == "AZURE_KEY"  # type: ignore[union-attr]
    assert cand.endpoint.batch is not None and cand.endpoint.batch.protocol == "anthropic"
    assert cand.endpoint.limits.auto and imported.evalscope_mismatch == "warn"
    assert cfg.panel.cascade == ("cheap", "strong") and cfg.stop.rule == "decided" and cfg.stop.margin == 0.01
    assert cfg.judges[1].template is not None and "{reference}" in cfg.judges[1].template


def test_secrets_are_written_as_the_names_of_their_variables(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_KEY", "sk-secret-value")
    monkeypatch.setenv("BASE_KEY", "sk-other-secret")
    cfg = config_from_dict(_old("panel", tmp_path), source="panel.json", base_dir=tmp_path)
    save_config(cfg, tmp_path / "run")
    text = (tmp_path / "run" / "config.json").read_text(encoding="utf-8")
    assert "sk-" not in text
    assert '"api_key_env": "BASE_KEY"' in text and '"env": "AZURE_KEY"' in text


def test_a_mismatch_setting_is_written_only_beside_its_report(tmp_path: Path) -> None:
    """An empty `evalscope_report` keeps no report: its `evalscope_mismatch` is not written, which the
    loader would refuse without one (found by comparing with the writer of 1caeffd on mutated files)."""
    data = _old("panel", tmp_path)
    data["models"][3]["evalscope_report"] = ""
    cfg = config_from_dict(data, source="panel.json", base_dir=tmp_path)
    assert cfg.models[3].evalscope_report is None and cfg.models[3].evalscope_mismatch == "warn"
    again = config_from_dict(config_to_dict(cfg), source="config.json", base_dir=tmp_path)
    assert "evalscope_mismatch" not in config_to_dict(cfg)["models"][3]
    assert config_to_dict(again) == config_to_dict(cfg)
