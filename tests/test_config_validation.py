"""Config values are held to the ranges the chat API and the engine can honour, before anything is sent.

Generation parameters against the OpenAI chat API's ranges (models' and the judge's), every other
numeric option finite and in range, ceilings on concurrency, and an empty `subsets` list: each a
ConfigError that names the config file and the key path.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_engine.config import MAX_CONCURRENCY, MAX_QUERIES_IN_FLIGHT, load_config
from arena_engine.errors import ConfigError
from arena_engine.runfolder import load_run_config, save_config

BASE = """
[run]
output_dir = "out"
{run}
[[datasets]]
name = "qa"
path = "data/qa"
{dataset}
[[models]]
name = "base"
api_url = "http://127.0.0.1:9/v1"
{model}
[models.generation]
{generation}
[[models]]
name = "cand"
api_url = "http://127.0.0.1:9/v1"
[judge]
name = "judge"
api_url = "http://127.0.0.1:9/v1"
{judge}
[rating]
{rating}
"""


def write(tmp_path: Path, **parts: str) -> Path:
    fields = {"run": "", "dataset": "", "model": "", "generation": "", "judge": "", "rating": ""} | parts
    path = tmp_path / "arena.toml"
    path.write_text(BASE.format(**fields))
    return path


def refused(path: Path, *needles: str) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: "), msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    return msg


BAD_GENERATION = [
    ("temperature = nan", "generation.temperature", "[0, 2]"),
    ("temperature = inf", "generation.temperature", "[0, 2]"),
    ("temperature = -0.1", "generation.temperature", "[0, 2]"),
    ("temperature = 2.5", "generation.temperature", "[0, 2]"),
    ('temperature = "hot"', "generation.temperature", "[0, 2]"),
    ("top_p = 1.5", "generation.top_p", "[0, 1]"),
    ("top_p = -0.5", "generation.top_p", "[0, 1]"),
    ("max_tokens = -5", "generation.max_tokens", "integer >= 1"),
    ("max_tokens = 0", "generation.max_tokens", "integer >= 1"),
    ("max_tokens = 64.5", "generation.max_tokens", "integer >= 1"),
    ("max_tokens = true", "generation.max_tokens", "integer >= 1"),
    ("max_completion_tokens = 0", "generation.max_completion_tokens", "integer >= 1"),
    ("presence_penalty = 2.5", "generation.presence_penalty", "[-2, 2]"),
    ("frequency_penalty = -3", "generation.frequency_penalty", "[-2, 2]"),
    ("frequency_penalty = -inf", "generation.frequency_penalty", "[-2, 2]"),
    ("seed = 1.5", "generation.seed", "integer"),
    ('stop = ["a", "b", "c", "d", "e"]', "generation.stop", "at most 4"),
    ("stop = 3", "generation.stop", "string"),
    ('logprobs = "yes"', "generation.logprobs", "true or false"),
    ("logprobs = true\ntop_logprobs = 21", "generation.top_logprobs", "[0, 20]"),
    ("top_logprobs = 5", "generation.top_logprobs", "logprobs' = true"),
    ('logit_bias = { "50256" = 101 }', "generation.logit_bias", "[-100, 100]"),
    ('logit_bias = { "hello" = 1 }', "generation.logit_bias", "not a token id"),
    ("logit_bias = 5", "generation.logit_bias", "token ids"),
    ("n = 2", "generation.n", "one answer per query"),
    ("n = true", "generation.n", "one answer per query"),
    ("top_k = nan", "generation.top_k", "finite"),  # a provider's own key: allowed, but never NaN
    ("extra_body = { options = [1, inf] }", "generation.extra_body.options[1]", "finite"),
    ("when = 1979-05-27", "generation.when", "JSON value"),
    ("big = 99999999999999999999999", "generation.big", "64 bits"),
    ('model = "other"', "generation.model", "set by arena-engine"),
    ("stream = true", "generation.stream", "set by arena-engine"),
]


@pytest.mark.parametrize(("line", "key", "why"), BAD_GENERATION, ids=[c[0] for c in BAD_GENERATION])
def test_a_model_generation_param_out_of_the_api_range_is_refused(tmp_path: Path, line: str, key: str,
                                                                  why: str) -> None:
    refused(write(tmp_path, generation=line), f"'models[0].{key}'", why)


@pytest.mark.parametrize(("line", "key", "why"), BAD_GENERATION[::3], ids=[c[0] for c in BAD_GENERATION[::3]])
def test_the_judge_generation_is_held_to_the_same_ranges(tmp_path: Path, line: str, key: str, why: str) -> None:
    refused(write(tmp_path, judge="[judge.generation]\n" + line), f"'judge.{key}'", why)


def test_values_at_the_edges_of_the_ranges_and_provider_keys_are_kept_as_written(tmp_path: Path) -> None:
    gen = "\n".join([
        "temperature = 2", "top_p = 1", "max_tokens = 1", "max_completion_tokens = 4096",
        "presence_penalty = -2", "frequency_penalty = 2.0", "seed = -7", 'stop = ["a", "b", "c", "d"]',
        "logprobs = true", "top_logprobs = 20", 'logit_bias = { "50256" = -100, "11" = 100 }', "n = 1",
        "top_k = 40", "repetition_penalty = 1.1", 'reasoning_effort = "low"',
        'response_format = { type = "json_object" }',
    ])
    cfg = load_config(write(tmp_path, generation=gen, judge='[judge.generation]\ntemperature = 0\nstop = "END"'))
    g = cfg.model("base").generation
    assert g["temperature"] == 2 and isinstance(g["temperature"], int)  # as written: content keys stay put
    assert g["stop"] == ["a", "b", "c", "d"] and g["logit_bias"] == {"50256": -100, "11": 100}
    assert g["top_k"] == 40 and g["response_format"] == {"type": "json_object"}
    assert cfg.judge.generation == {"temperature": 0, "stop": "END"}
    top = load_config(write(tmp_path, generation="top_p = 0"))  # OpenAI documents 0..1
    assert top.model("base").generation == {"top_p": 0}


BAD_NUMBERS = [
    ({"model": "rpm = nan"}, "'models[0].rpm'", "finite"),
    ({"model": "tpm = inf"}, "'models[0].tpm'", "finite"),
    ({"model": "read_timeout = inf"}, "'models[0].read_timeout'", "finite"),
    ({"model": "timeout = nan"}, "'models[0].timeout'", "finite"),
    ({"model": "connect_timeout = -1"}, "'models[0].connect_timeout'", "> 0"),
    ({"judge": "retry_max_time = inf"}, "'judge.retry_max_time'", "finite"),
    ({"model": "price_in = -1"}, "'models[0].price_in'", ">= 0"),
    ({"model": "price_out = nan"}, "'models[0].price_out'", "finite"),
    ({"judge": "price_in = inf"}, "'judge.price_in'", "finite"),
    ({"judge": "parse_retries = -1"}, "'judge.parse_retries'", ">= 0"),
    ({"run": "fsync_interval = nan"}, "'run.fsync_interval'", "finite"),
    ({"run": "fsync_interval = inf"}, "'run.fsync_interval'", "finite"),
    ({"run": "seed = 99999999999999999999"}, "'run.seed'", "64-bit"),
    ({"model": "max_attempts = 99999999999999999999"}, "'models[0].max_attempts'", "64-bit"),
    ({"rating": "ci = nan"}, "'rating.ci'", "finite"),
    ({"rating": "rounds = -1"}, "'rating.rounds'", "> 0"),
]


@pytest.mark.parametrize(("parts", "key", "why"), BAD_NUMBERS, ids=[next(iter(c[0].values())) for c in BAD_NUMBERS])
def test_every_numeric_option_is_finite_and_in_range(tmp_path: Path, parts: dict[str, str], key: str,
                                                     why: str) -> None:
    refused(write(tmp_path, **parts), key, why)


def test_concurrency_above_the_ceiling_is_an_error_naming_key_and_ceiling(tmp_path: Path) -> None:
    refused(write(tmp_path, model="concurrency = 10000000000"), "'models[0].concurrency'", f"ceiling of {MAX_CONCURRENCY}")
    refused(write(tmp_path, judge=f"concurrency = {MAX_CONCURRENCY + 1}"), "'judge.concurrency'", str(MAX_CONCURRENCY))
    refused(write(tmp_path, model="concurrency = 1e10"), "'models[0].concurrency'", "integer")
    refused(write(tmp_path, run=f"queries_in_flight = {MAX_QUERIES_IN_FLIGHT + 1}"), "'run.queries_in_flight'",
            f"ceiling of {MAX_QUERIES_IN_FLIGHT}")
    cfg = load_config(write(tmp_path, model=f"concurrency = {MAX_CONCURRENCY}",
                            run=f"queries_in_flight = {MAX_QUERIES_IN_FLIGHT}"))
    assert cfg.model("base").endpoint.limits.concurrency == MAX_CONCURRENCY
    assert cfg.queries_in_flight == MAX_QUERIES_IN_FLIGHT


def test_an_empty_subsets_list_is_refused_and_allow_empty_is_kept_in_the_run_folder(tmp_path: Path) -> None:
    refused(write(tmp_path, dataset="subsets = []"), "'datasets[0].subsets' is empty")
    refused(write(tmp_path, dataset='allow_empty = "yes"'), "'datasets[0].allow_empty'")
    cfg = load_config(write(tmp_path, dataset="allow_empty = true"))
    assert cfg.datasets[0].allow_empty
    assert not load_config(write(tmp_path)).datasets[0].allow_empty
    save_config(cfg, tmp_path / "run")
    assert load_run_config(tmp_path / "run").datasets[0].allow_empty  # `report` skips the same subsets
