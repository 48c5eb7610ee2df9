"""Run configuration: small frozen value objects, one per table of the config file (docs/config.md).

Each field that is a config key says so in its metadata (`config_fields.key`): its name in the file,
the values the loader accepts, its default (stated once, here or in the field of the value it
holds), how the run folder's config.json writes it. `config_loader` reads a file into these values and
`config_dump` writes them back, both by walking the fields. API keys are referenced by the name of an
environment variable; their values never sit in a config object, a checkpoint or a report.

No runtime imports (no aiohttp, no event loop): reading a config file needs only the values.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from .config_fields import DERIVED, key
from .endpoint_config import MAX_CONCURRENCY, Endpoint
from .errors import ConfigError
from .panel import PanelConfig
from .stop_rules import StopConfig

Mode = Literal["baseline", "all_pairs"]
OverallMode = Literal["pooled", "evalscope"]

# The ceiling on queries worked on at once (the default is derived below it); MAX_CONCURRENCY is the
# one on an endpoint's concurrent requests (endpoint_config).
MAX_QUERIES_IN_FLIGHT = 3 * MAX_CONCURRENCY

__all__ = ["MAX_CONCURRENCY", "MAX_QUERIES_IN_FLIGHT", "DatasetConfig", "JudgeConfig", "Mode", "ModelConfig",
           "OverallMode", "RatingConfig", "RunConfig"]

_SET = "not_none"


@dataclass(frozen=True)
class ModelConfig:
    """A model that answers the queries (a candidate or the baseline)."""

    name: str = key(required=True, kind=str, doc="the model's name in reports")
    endpoint: Endpoint = key(of=Endpoint, flat=True, custom=True)
    generation: Mapping[str, Any] = key(factory=dict, kind=dict, custom=True, doc="request parameters")
    price_in: float | None = key(None, kind=float, check="non_negative", dump=_SET, doc="per 1M prompt tokens")
    price_out: float | None = key(None, kind=float, check="non_negative", dump=_SET,
                                  doc="per 1M completion tokens")
    # answers imported from an EvalScope reports/<model> folder
    evalscope_report: Path | None = key(None, kind=str, custom=True, dump=_SET, doc="an EvalScope reports folder")
    # None: "<name> @ <api_url>" (see arena_engine.identity)
    identity: str | None = key(None, kind=str, custom=True, dump=_SET, doc="what the answers are stored under")
    reuse_answers_of: str | None = key(None, kind=str, dump=_SET, doc="share the answers of this other model")
    # an imported row that answers no query: stop, or skip it
    evalscope_mismatch: Literal["error", "warn"] = key("error", kind=str, check="choice", choices=("error", "warn"),
                                                       dump="changed", doc="an imported row that answers no query")
    # a system message for this model (see identity.model_messages)
    system_prompt: str | None = key(None, kind=str, custom=True, dump=_SET, also=(("system_prompt_file", None),),
                                    doc="a system message for this model's requests")
    # combined with a query's own `system`
    system_prompt_combine: Literal["prepend", "replace", "fallback"] = key(
        "prepend", kind=str, check="choice", choices=("prepend", "replace", "fallback"), dump="changed",
        doc="how system_prompt and a query's own system message combine")


@dataclass(frozen=True)
class DatasetConfig:
    name: str = key(config_default=DERIVED, kind=str, doc="the dataset's name (default: the folder's)")
    path: Path = key(required=True, kind=str, custom=True, doc="a folder of <subset>.jsonl files")
    subsets: tuple[str, ...] | None = key(None, kind=list, custom=True, dump=_SET, doc="only these subsets")
    # an empty subset (or dataset folder) is skipped with a warning, not an error
    allow_empty: bool = key(False, kind=bool, dump="changed", doc="skip an empty subset with a warning")


@dataclass(frozen=True)
class JudgeConfig:
    name: str = key(required=True, kind=str, doc="the judge's name in reports")
    endpoint: Endpoint = key(of=Endpoint, flat=True, custom=True)
    generation: Mapping[str, Any] = key(factory=lambda: {"temperature": 0.0}, kind=dict, custom=True,
                                        doc="judge request parameters (replaces the default)")
    # None: "<name> @ <api_url>" (see arena_engine.identity)
    identity: str | None = key(None, kind=str, custom=True, dump=_SET, doc="what the verdicts are stored under")
    # None: arena_engine.judge.DEFAULT_SYSTEM_PROMPT
    system_prompt: str | None = key(None, kind=str, custom=True, dump=_SET, also=(("system_prompt_file", None),),
                                    doc="the judge's system message")
    # None: the default template (with a reference block when the subset has one)
    template: str | None = key(None, kind=str, custom=True, dump=_SET, also=(("template_file", None),),
                               doc="the judge prompt")
    parse_retries: int = key(2, kind=int, check="non_negative", doc="resends after a reply without a verdict")
    structured_output: bool = key(False, kind=bool, doc="ask for the verdict as schema-constrained JSON")
    price_in: float | None = key(None, kind=float, check="non_negative", dump=_SET, doc="per 1M prompt tokens")
    price_out: float | None = key(None, kind=float, check="non_negative", dump=_SET,
                                  doc="per 1M completion tokens")
    # candidates of this judge's own family (self-preference, judge_quality)
    related_to: tuple[str, ...] = key((), kind=list, custom=True, dump="non_empty",
                                      doc="candidates of the judge's own family")


@dataclass(frozen=True)
class RatingConfig:
    rounds: int = key(1000, kind=int, check="positive", doc="bootstrap rounds")
    ci: float = key(0.95, kind=float, check="finite", bounds=(0.0, 1.0, False, False), bounds_text="between 0 and 1",
                    doc="confidence level of the intervals")
    strong_weight: int = key(3, kind=int, check="positive", doc="games a strong verdict counts for")
    # "elo": the BT fit on the Elo scale; "elo-online": legacy
    method: Literal["bt", "elo", "elo-online"] = key("bt", kind=str, check="choice", choices=("bt", "elo", "elo-online"),
                                                     doc="the rating model")
    interval: Literal["score", "bootstrap", "sandwich"] = key(
        "score", kind=str, check="choice", choices=("score", "bootstrap", "sandwich"), doc="the interval")
    overall: OverallMode = key("pooled", kind=str, check="choice", choices=("pooled", "evalscope"),
                               doc="the OVERALL board: pooled games or EvalScope's mean of subsets")


@dataclass(frozen=True)
class RunConfig:
    output_dir: Path = key(config_default="outputs/arena", kind=str, custom=True, table="run", doc="the run folder")
    datasets: tuple[DatasetConfig, ...] = key(required=True, kind=list, of=DatasetConfig, custom=True)
    models: tuple[ModelConfig, ...] = key(required=True, kind=list, of=ModelConfig, custom=True)
    judge: JudgeConfig = key(of=JudgeConfig, custom=True, doc="the judge (or judges[0] of a panel)")
    baseline: str = key(config_default=DERIVED, kind=str, table="arena", custom=True, doc="the baseline model")
    seed: int = key(0, kind=int, table="run", doc="seeds the drawn pairs and the resampling")
    mode: Mode = key("baseline", kind=str, check="choice", choices=("baseline", "all_pairs"), table="run",
                     doc="who battles whom")
    max_pairs_per_query: int | None = key(None, kind=int, check="positive", dump=_SET, table="run",
                                          doc="in all_pairs mode, at most this many pairs per query")
    # None: derived from the endpoints' concurrency
    queries_in_flight: int | None = key(None, kind=int, check="positive", ceiling=MAX_QUERIES_IN_FLIGHT, dump=_SET,
                                        table="run", doc="queries worked on at once")
    rating: RatingConfig = key(RatingConfig(), of=RatingConfig, custom=True)
    fsync_interval: float = key(1.0, kind=float, check="positive", table="run", doc="seconds between checkpoint flushes")
    # [[judges]]: a panel (judge is then judges[0]); () = the one judge
    judges: tuple[JudgeConfig, ...] = key((), kind=list, of=JudgeConfig, custom=True)
    panel: PanelConfig = key(factory=PanelConfig, of=PanelConfig, custom=True)
    # [arena.stop]: adaptive judging (default: never)
    stop: StopConfig = key(factory=StopConfig, kind=(str, dict), of=StopConfig, table="arena", custom=True)

    @property
    def panel_judges(self) -> tuple[JudgeConfig, ...]:
        """Every judge of the run, in config order (one: the ``[judge]``)."""
        return self.judges or (self.judge,)

    @property
    def candidates(self) -> tuple[ModelConfig, ...]:
        return tuple(m for m in self.models if m.name != self.baseline)

    def model(self, name: str) -> ModelConfig:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigError(f"no model named {name!r}")

    def with_output_dir(self, output_dir: Path) -> RunConfig:
        return replace(self, output_dir=output_dir)

    def missing_keys(self) -> list[str]:
        """Environment variables named for API keys that are not set."""
        names = [n for m in self.models for n in m.endpoint.env_names()]
        names += [n for j in self.panel_judges for n in j.endpoint.env_names()]
        return sorted({n for n in names if n and not os.environ.get(n)})
