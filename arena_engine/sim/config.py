"""What the simulated endpoint does: models, latency, faults, judge behaviour (frozen value objects).

A config can be built in code, read from a TOML or JSON file (`SimConfig.from_file`), or taken
ready-made for the demo (`SimConfig.demo()`). Validation errors are `ConfigError`s that name the
file and the key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from arena_engine.configfile import did_you_mean, read_config_file
from arena_engine.errors import ConfigError

LatencyKind = Literal["fixed", "lognormal"]
RetryAfterFormat = Literal["seconds", "ms", "both", "none"]
VerdictFormat = Literal["json", "bracket", "mixed"]

DEFAULT_JUDGE_NOISE = 0.3
DEFAULT_TIE_RATE = 0.15
DEFAULT_POSITION_BIAS = 0.1
DEFAULT_STRONG_MARGIN = 2.0
DEFAULT_ANSWER_NOISE = 0.5
DEFAULT_DIFFICULTY_SPREAD = 0.5
DEFAULT_VIOLATION_GRACE_S = 0.02


@dataclass(frozen=True)
class Latency:
    """Time the server waits before answering: a fixed delay, or lognormal with that median."""

    kind: LatencyKind = "fixed"
    seconds: float = 0.0
    sigma: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("fixed", "lognormal"):
            raise ConfigError(f"latency.kind must be 'fixed' or 'lognormal', not {self.kind!r}")
        _check_number("latency.seconds", self.seconds, low=0.0)
        _check_number("latency.sigma", self.sigma, low=0.0)


@dataclass(frozen=True)
class Faults:
    """Fault injection rates (each a probability per admitted request; they must sum to <= 1).

    `rate_bad_verdict` is drawn separately and applies to judge models only.
    """

    rate_429: float = 0.0
    retry_after: RetryAfterFormat = "both"
    retry_after_s: float = 1.0
    rate_500: float = 0.0
    rate_502: float = 0.0
    rate_503: float = 0.0
    rate_reset: float = 0.0
    rate_hang: float = 0.0
    hang_seconds: float = 30.0
    #: headers and half the body, then silence for hang_seconds (a stall mid-body)
    rate_stall: float = 0.0
    #: a healthy answer whose body arrives in 10 pieces spread over trickle_seconds
    rate_trickle: float = 0.0
    trickle_seconds: float = 1.0
    rate_malformed: float = 0.0
    rate_no_choices: float = 0.0
    rate_bad_verdict: float = 0.0
    #: Batch API rows (arena_engine.sim.batches): answered with a 500, or left unfinished (batch expired)
    rate_batch_error: float = 0.0
    rate_batch_expire: float = 0.0

    def __post_init__(self) -> None:
        if self.retry_after not in ("seconds", "ms", "both", "none"):
            raise ConfigError(
                f"faults.retry_after must be one of seconds, ms, both, none; not {self.retry_after!r}"
            )
        for f in fields(self):
            if f.name.startswith("rate_"):
                _check_number(f"faults.{f.name}", getattr(self, f.name), low=0.0, high=1.0)
        _check_number("faults.retry_after_s", self.retry_after_s, low=0.0)
        _check_number("faults.hang_seconds", self.hang_seconds, low=0.0)
        _check_number("faults.trickle_seconds", self.trickle_seconds, low=0.0)
        total = sum(rate for _, rate in self.http_fault_rates())
        if total > 1.0 + 1e-9:
            raise ConfigError(f"faults: the request fault rates sum to {total:g}, more than 1")

    def http_fault_rates(self) -> tuple[tuple[str, float], ...]:
        """The mutually exclusive per-request faults, in the order they are drawn."""
        return (
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("502", self.rate_502),
            ("503", self.rate_503),
            ("reset", self.rate_reset),
            ("hang", self.rate_hang),
            ("stall", self.rate_stall),
            ("trickle", self.rate_trickle),
            ("malformed", self.rate_malformed),
            ("no_choices", self.rate_no_choices),
        )


@dataclass(frozen=True)
class SimModel:
    """One served model. `quality` is a Bradley-Terry logit: +1 beats 0 about 73% of decisive games."""

    name: str
    quality: float = 0.0
    judge: bool = False
    latency: Latency | None = None
    #: the name answers are tagged with (default `name`): two simulators serving one model id as two
    #: variants tag them apart, so a judge simulator that knows both tags can tell their qualities
    tag: str | None = None
    #: a judge's own habits (None: the config's global judge_noise / position_bias)
    judge_noise: float | None = None
    position_bias: float | None = None
    #: a judge's lean toward the answers of one candidate (its own family): added to that answer's side
    #: of the latent verdict, in the same logit units as quality
    self_preference: float = 0.0
    prefers: str | None = None  # the candidate (answer tag) self_preference favours
    #: seconds a Batch API batch of this model's requests takes (None: SimConfig.batch_seconds); a batch
    #: holding several models' requests takes the longest of theirs
    batch_seconds: float | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name or any(c.isspace() or c == "]" for c in self.name):
            raise ConfigError(
                f"model name must be a non-empty string without spaces or ']', not {self.name!r}"
            )
        _check_number(f"models[{self.name}].quality", self.quality)
        if self.judge_noise is not None:
            _check_number(f"models[{self.name}].judge_noise", self.judge_noise, low=0.0)
        if self.position_bias is not None:
            _check_number(f"models[{self.name}].position_bias", self.position_bias)
        _check_number(f"models[{self.name}].self_preference", self.self_preference)
        if self.batch_seconds is not None:
            _check_number(f"models[{self.name}].batch_seconds", self.batch_seconds, low=0.0)
        if self.prefers is not None and (not isinstance(self.prefers, str) or not self.prefers):
            raise ConfigError(f"models[{self.name}].prefers must be a model name, not {self.prefers!r}")
        if self.self_preference and self.prefers is None:
            raise ConfigError(f"models[{self.name}].self_preference needs 'prefers' (the favoured candidate)")
        if (self.judge_noise is not None or self.position_bias is not None or self.prefers is not None) \
                and not self.judge:
            raise ConfigError(f"models[{self.name}]: judge_noise, position_bias and prefers need judge = true")


@dataclass(frozen=True)
class SimConfig:
    """The whole simulated endpoint.

    `rpm_limit` is enforced over every sliding window of `rpm_window_s` seconds (default the minute),
    answering 429 with the exact wait in `Retry-After` and `retry-after-ms`.

    Judge model (see `arena_engine.sim.judging`): latent y = s_q * (strength_A - strength_B)
    + position_bias + judge_noise * N(0, 1) + Logistic(0, 1), cut into the five labels at
    +-tie_margin and +-(tie_margin + strong_margin), where tie_margin gives P(tie) = tie_rate at equal
    strengths, s_q in [1 - difficulty_spread, 1 + difficulty_spread] is the per-query scale and
    strength = quality + answer_noise * N(0, 1) drawn once per (model, query).

    `prefer_a_rate` is the share of verdicts for which the judge ignores the answers and says "A>B"
    (the answer shown first wins, whatever it is): 1.0 is a judge that always prefers position A, so
    every battle's two orders disagree. Unparseable verdicts (garbage) are `faults.rate_bad_verdict`.
    """

    models: tuple[SimModel, ...]
    seed: int = 0
    latency: Latency = field(default_factory=Latency)
    faults: Faults = field(default_factory=Faults)
    rpm_limit: float | None = None
    rpm_window_s: float = 60.0
    judge_noise: float = DEFAULT_JUDGE_NOISE
    tie_rate: float = DEFAULT_TIE_RATE
    position_bias: float = DEFAULT_POSITION_BIAS
    prefer_a_rate: float = 0.0
    strong_margin: float = DEFAULT_STRONG_MARGIN
    answer_noise: float = DEFAULT_ANSWER_NOISE
    difficulty_spread: float = DEFAULT_DIFFICULTY_SPREAD
    verdict_format: VerdictFormat = "json"
    track_bodies: bool = True
    violation_grace_s: float = DEFAULT_VIOLATION_GRACE_S
    #: Batch API (arena_engine.sim.batches): seconds from create to completed (the 24 h window compressed),
    #: and delays inside an upload and a create (the kill tests' windows)
    batch_seconds: float = 1.0
    batch_upload_delay_s: float = 0.0
    batch_create_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not isinstance(self.models, tuple):
            object.__setattr__(self, "models", tuple(self.models))
        if not self.models:
            raise ConfigError("models: at least one model is needed")
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ConfigError(f"models: duplicate model names {dupes}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, not {self.seed!r}")
        if self.rpm_limit is not None:
            _check_number("rpm_limit", self.rpm_limit, low=0.0)
            if self.rpm_limit <= 0:
                raise ConfigError("rpm_limit must be > 0 (leave it out for no limit)")
        _check_number("rpm_window_s", self.rpm_window_s, low=0.001)
        _check_number("judge_noise", self.judge_noise, low=0.0)
        _check_number("tie_rate", self.tie_rate, low=0.0, high=0.99)
        _check_number("position_bias", self.position_bias)
        _check_number("prefer_a_rate", self.prefer_a_rate, low=0.0, high=1.0)
        _check_number("strong_margin", self.strong_margin, low=0.0)
        _check_number("answer_noise", self.answer_noise, low=0.0)
        _check_number("difficulty_spread", self.difficulty_spread, low=0.0, high=1.0)
        _check_number("violation_grace_s", self.violation_grace_s, low=0.0)
        for name in ("batch_seconds", "batch_upload_delay_s", "batch_create_delay_s"):
            _check_number(name, getattr(self, name), low=0.0)
        if self.verdict_format not in ("json", "bracket", "mixed"):
            raise ConfigError(f"verdict_format must be json, bracket or mixed, not {self.verdict_format!r}")

    def model(self, name: str) -> SimModel | None:
        for m in self.models:
            if m.name == name:
                return m
        return None

    @classmethod
    def demo(cls, *, seed: int = 0, latency: Latency | None = None) -> SimConfig:
        """Three candidates of clearly different quality (first = the natural baseline) and one judge."""
        return cls(
            models=(
                SimModel("sim-base", quality=0.0),
                SimModel("sim-strong", quality=1.2),
                SimModel("sim-weak", quality=-1.2),
                SimModel("sim-judge", quality=0.0, judge=True),
            ),
            seed=seed,
            latency=latency if latency is not None else Latency("fixed", 0.0),
        )

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "<config>") -> SimConfig:
        """Build from plain data (as parsed from TOML/JSON). Errors name `source` and the key."""
        try:
            return _config_from_mapping(data, source)
        except ConfigError as exc:
            msg = str(exc)
            if msg.startswith(source):
                raise
            raise ConfigError(f"{source}: {msg}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SimConfig:
        """Read a simulator config: TOML, or JSON for a ``.json`` file."""
        p = Path(path)
        data = read_config_file(p, "simulator config")
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a table/object")
        return cls.from_mapping(data, source=str(p))


def _check_number(key: str, value: object, *, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, not {value!r}")
    if low is not None and value < low:
        raise ConfigError(f"{key} must be >= {low:g}, not {value!r}")
    if high is not None and value > high:
        raise ConfigError(f"{key} must be <= {high:g}, not {value!r}")


def _known_keys(data: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        hint = did_you_mean(str(unknown[0]), allowed)
        raise ConfigError(f"{where}: unknown key(s) {unknown}" + (f" ({hint})" if hint else "") + f"; known: {sorted(allowed)}")


def _latency_from(data: Any, where: str) -> Latency:
    if isinstance(data, int | float) and not isinstance(data, bool):
        return Latency("fixed", float(data))
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a table like {{kind = 'fixed', seconds = 0.05}} or a number")
    _known_keys(data, {"kind", "seconds", "sigma"}, where)
    try:
        return Latency(**data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _config_from_mapping(data: Mapping[str, Any], source: str) -> SimConfig:
    top = {f.name for f in fields(SimConfig)}
    _known_keys(data, top, source)
    if "models" not in data:
        raise ConfigError(f"{source}: key 'models' is missing (a list of {{name, quality, judge}})")
    raw_models = data["models"]
    if not isinstance(raw_models, list):
        raise ConfigError(f"{source}: key 'models' must be a list of tables")
    models = []
    model_keys = {f.name for f in fields(SimModel)}
    for i, m in enumerate(raw_models):
        where = f"{source}: models[{i}]"
        if not isinstance(m, Mapping):
            raise ConfigError(f"{where} must be a table with at least 'name'")
        _known_keys(m, model_keys, where)
        if "name" not in m:
            raise ConfigError(f"{where}: key 'name' is missing")
        kwargs = dict(m)
        if kwargs.get("latency") is not None:
            kwargs["latency"] = _latency_from(kwargs["latency"], f"{where}.latency")
        if not isinstance(kwargs.get("judge", False), bool):
            raise ConfigError(f"{where}.judge must be true or false")
        try:
            models.append(SimModel(**kwargs))
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    kwargs2: dict[str, Any] = {k: v for k, v in data.items() if k != "models"}
    if "latency" in kwargs2:
        kwargs2["latency"] = _latency_from(kwargs2["latency"], f"{source}: latency")
    if "faults" in kwargs2:
        fd = kwargs2["faults"]
        if not isinstance(fd, Mapping):
            raise ConfigError(f"{source}: key 'faults' must be a table")
        _known_keys(fd, {f.name for f in fields(Faults)}, f"{source}: faults")
        try:
            kwargs2["faults"] = Faults(**fd)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None
    for key in ("track_bodies",):
        if key in kwargs2 and not isinstance(kwargs2[key], bool):
            raise ConfigError(f"{source}: key {key!r} must be true or false")
    try:
        return SimConfig(models=tuple(models), **kwargs2)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
