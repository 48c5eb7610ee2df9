"""Config files: strict keys and types, errors that name the file and key, keys only by env-var name."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_engine.config import load_config
from arena_engine.errors import ConfigError
from arena_engine.pipeline import Arena
from arena_engine.runfolder import config_to_dict, load_run_config, save_config

GOOD = """
[run]
output_dir = "out"
seed = 7
[[datasets]]
name = "qa"
path = "data/qa"
[[models]]
name = "base"
api_url = "http://127.0.0.1:9/v1"
api_key_env = "ARENA_TEST_KEY"
concurrency = 8
rpm = 600
generation = { temperature = 0.0, max_tokens = 64 }
[[models]]
name = "cand"
model = "cand-instruct"
api_url = "http://127.0.0.1:9/v1/chat/completions"
[arena]
baseline = "base"
[judge]
name = "judge"
api_url = "http://127.0.0.1:9/v1"
[rating]
rounds = 50
"""


def _write(tmp_path: Path, text: str, name: str = "arena.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_good_config_round_trips_through_the_run_folder(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, GOOD))
    assert cfg.output_dir == tmp_path / "out"
    assert cfg.datasets[0].path == tmp_path / "data" / "qa"
    assert cfg.model("cand").endpoint.api_url == "http://127.0.0.1:9/v1"
    assert cfg.model("cand").endpoint.model == "cand-instruct"
    assert cfg.model("base").endpoint.limits.rpm == 600
    assert cfg.rating.rounds == 50
    save_config(cfg, tmp_path / "run")
    again = load_run_config(tmp_path / "run")
    assert config_to_dict(again.with_output_dir(cfg.output_dir)) == config_to_dict(cfg)


def test_adaptive_concurrency_is_on_unless_the_config_turns_it_off(tmp_path: Path) -> None:
    # issue 18: with a fixed concurrency a server's quota failed 126 of 800 judgments; adaptive got 3
    text = GOOD.replace("concurrency = 8\n", "concurrency = 8\nadaptive_concurrency = false\n")
    cfg = load_config(_write(tmp_path, text))
    assert not cfg.model("base").endpoint.limits.adaptive
    assert cfg.model("cand").endpoint.limits.adaptive and cfg.judge.endpoint.limits.adaptive
    save_config(cfg, tmp_path / "run")  # the run folder keeps the choice: off stays off on resume
    again = load_run_config(tmp_path / "run")
    assert not again.model("base").endpoint.limits.adaptive and again.model("cand").endpoint.limits.adaptive


@pytest.mark.parametrize(
    ("edit", "needle"),
    [
        (("seed = 7", "seed = 7\nsped = 1"), "run.sped"),
        (("rounds = 50", 'rounds = "many"'), "rating.rounds"),
        (("concurrency = 8", "concurrency = 0"), "models[0].concurrency"),
        (('baseline = "base"', 'baseline = "nobody"'), "arena.baseline"),
        (('api_key_env = "ARENA_TEST_KEY"', 'api_key = "sk-123"'), "environment variable"),
        (("max_tokens = 64 }", "max_tokens = 64, n = 3 }"), "generation.n"),
        (('[judge]\nname = "judge"\n', "[judge]\n"), "judge.name"),
    ],
)
def test_bad_configs_name_file_and_key(tmp_path: Path, edit: tuple[str, str], needle: str) -> None:
    assert edit[0] in GOOD
    path = _write(tmp_path, GOOD.replace(edit[0], edit[1]))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)
    assert "sk-123" not in str(err.value)


def test_invalid_toml_and_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(_write(tmp_path, "[run\n"))
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(_write(tmp_path, "{", "a.json"))


def test_missing_key_variable_stops_before_any_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import anyio

    monkeypatch.delenv("ARENA_TEST_KEY", raising=False)
    cfg = load_config(_write(tmp_path, GOOD))

    async def main() -> None:
        async with Arena(cfg):
            pass

    with pytest.raises(ConfigError, match="ARENA_TEST_KEY"):
        anyio.run(main)
    assert not cfg.output_dir.exists(), "nothing is created before the keys are known"


def test_bad_dataset_line_is_the_error_itself_for_library_callers(tmp_path: Path) -> None:
    import anyio

    from arena_engine.errors import DatasetError

    (tmp_path / "data" / "qa").mkdir(parents=True)
    (tmp_path / "data" / "qa" / "arena.jsonl").write_text('{"query": "ok"}\n{"query": 3}\n')
    cfg = load_config(_write(tmp_path, GOOD.replace('api_key_env = "ARENA_TEST_KEY"\n', "")))

    async def main() -> None:
        async with Arena(cfg) as arena:
            await arena.run()

    with pytest.raises(DatasetError, match=r"arena.jsonl:2: query"):
        anyio.run(main)


AZURE = """
[judge]
name = "judge"
model = "gpt-4o"
api_url = "https://example.openai.azure.com/openai/deployments/gpt-4o"
extra_headers = { "api-key" = { env = "AZURE_TEST_KEY" }, "x-team" = "evals" }
query_params = { "api-version" = "2024-10-21" }
extra_body = { top_k = 5 }
"""


def test_extra_headers_query_params_and_extra_body_round_trip_with_names_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from arena_engine.client import EnvVar

    monkeypatch.delenv("AZURE_TEST_KEY", raising=False)
    text = GOOD.replace('[judge]\nname = "judge"\napi_url = "http://127.0.0.1:9/v1"\n', AZURE)
    cfg = load_config(_write(tmp_path, text))
    ep = cfg.judge.endpoint
    assert dict(ep.extra_headers) == {"api-key": EnvVar("AZURE_TEST_KEY"), "x-team": "evals"}
    assert dict(ep.query_params) == {"api-version": "2024-10-21"} and dict(ep.extra_body) == {"top_k": 5}
    assert "AZURE_TEST_KEY" in cfg.missing_keys()
    save_config(cfg, tmp_path / "run")
    saved = (tmp_path / "run" / "config.json").read_text()
    assert '"api-key": {\n' in saved and "AZURE_TEST_KEY" in saved
    again = load_run_config(tmp_path / "run")
    assert config_to_dict(again.with_output_dir(cfg.output_dir)) == config_to_dict(cfg)


@pytest.mark.parametrize(
    ("table", "needle"),
    [
        ('extra_headers = { "api-key" = "sk-123" }', "judge.extra_headers.api-key"),
        ('extra_headers = { "Authorization" = "Bearer sk-123" }', "judge.extra_headers.Authorization"),
        ('extra_headers = { "x-a" = { var = "X" } }', "judge.extra_headers.x-a"),
        ('query_params = { "key" = "sk-123" }', "judge.query_params.key"),
        ('extra_body = { messages = [] }', "judge.extra_body.messages"),
    ],
)
def test_secrets_written_into_headers_or_urls_are_refused(tmp_path: Path, table: str, needle: str) -> None:
    text = GOOD.replace('[judge]\nname = "judge"\n', f'[judge]\nname = "judge"\n{table}\n')
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and needle in str(err.value)
    assert "sk-123" not in str(err.value)
