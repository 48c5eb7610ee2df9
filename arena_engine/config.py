"""Run configuration: small frozen value objects and a strict TOML/JSON loader.

Every unknown key, wrong type and missing required key is a :class:`ConfigError` that names the file
and the key. API keys are referenced by the name of an environment variable; their values never sit in
a config object, a checkpoint or a report.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from .batch_options import PROTOCOLS, BatchOptions
from .chat_params import check_generation
from .configfile import did_you_mean, read_config_file
from .endpoint_config import AUTO_MAX, Endpoint, EnvVar, Limits, RetryPolicy, Timeouts
from .errors import ConfigError
from .panel import COMBINE_MODES, PanelConfig
from .stop_rules import RULES, StopConfig

Mode = Literal["baseline", "all_pairs"]
OverallMode = Literal["pooled", "evalscope"]

# Ceilings on what a config may ask for. Each concurrent request holds a connection, a task and its
# buffers; a typo such as `concurrency = 10000000000` once grew the process to 14 GB within a minute.
MAX_CONCURRENCY = 4096  # concurrent requests per endpoint
MAX_QUERIES_IN_FLIGHT = 3 * MAX_CONCURRENCY  # queries worked on at once (the default is derived below it)


@dataclass(frozen=True)
class ModelConfig:
    """A model that answers the queries (a candidate or the baseline)."""

    name: str
    endpoint: Endpoint
    generation: Mapping[str, Any] = field(default_factory=dict)
    price_in: float | None = None  # currency per 1M prompt tokens
    price_out: float | None = None  # currency per 1M completion tokens
    evalscope_report: Path | None = None  # answers imported from an EvalScope reports/<model> folder
    identity: str | None = None  # None: "<name> @ <api_url>" (see arena_engine.identity)
    reuse_answers_of: str | None = None  # share the answers of this other configured model
    evalscope_mismatch: Literal["error", "warn"] = "error"  # an imported row that answers no query: stop, or skip it
    system_prompt: str | None = None  # a system message for this model (see identity.model_messages)
    system_prompt_combine: Literal["prepend", "replace", "fallback"] = "prepend"  # with a query's own `system`


@dataclass(frozen=True)
class DatasetConfig:
    name: str
    path: Path
    subsets: tuple[str, ...] | None = None
    allow_empty: bool = False  # an empty subset (or dataset folder) is skipped with a warning, not an error


@dataclass(frozen=True)
class JudgeConfig:
    name: str
    endpoint: Endpoint
    generation: Mapping[str, Any] = field(default_factory=lambda: {"temperature": 0.0})
    identity: str | None = None  # None: "<name> @ <api_url>" (see arena_engine.identity)
    system_prompt: str | None = None  # None: arena_engine.judge.DEFAULT_SYSTEM_PROMPT
    template: str | None = None  # None: the default template (with a reference block when the subset has one)
    parse_retries: int = 2
    structured_output: bool = False
    price_in: float | None = None
    price_out: float | None = None
    related_to: tuple[str, ...] = ()  # candidates of this judge's own family (self-preference, judge_quality)


@dataclass(frozen=True)
class RatingConfig:
    rounds: int = 1000
    ci: float = 0.95
    strong_weight: int = 3
    method: Literal["bt", "elo", "elo-online"] = "bt"  # "elo": the BT fit on the Elo scale; "elo-online": legacy
    interval: Literal["score", "bootstrap", "sandwich"] = "score"
    overall: OverallMode = "pooled"


@dataclass(frozen=True)
class RunConfig:
    output_dir: Path
    datasets: tuple[DatasetConfig, ...]
    models: tuple[ModelConfig, ...]
    judge: JudgeConfig
    baseline: str
    seed: int = 0
    mode: Mode = "baseline"
    max_pairs_per_query: int | None = None
    queries_in_flight: int | None = None  # None: derived from the endpoints' concurrency
    rating: RatingConfig = RatingConfig()
    fsync_interval: float = 1.0
    judges: tuple[JudgeConfig, ...] = ()  # [[judges]]: a panel (judge is then judges[0]); () = the one judge
    panel: PanelConfig = field(default_factory=PanelConfig)
    stop: StopConfig = field(default_factory=StopConfig)  # [arena.stop]: adaptive judging (default: never)

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


# ------------------------------------------------------------------------------------------- loading

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false", dict: "a table", list: "a list"}


class _Reader:
    """Reads one table of a config file, checking keys and types, naming the file and the key path."""

    def __init__(self, source: str, path: str, table: Any) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: {path or 'the top level'} must be a table")
        self.source, self.path, self.table = source, path, table
        self.seen: set[str] = set()

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., *, required: bool = False) -> Any:
        self.seen.add(key)
        if key not in self.table:
            if required or default is ...:
                raise ConfigError(f"{self.source}: missing required key '{self.where(key)}'")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        ok = isinstance(value, kinds) and not (isinstance(value, bool) and bool not in kinds)
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            ok = True
            value = float(value)
        if not ok:
            want = " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be {want}, got {value!r}")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:  # no JSON writer takes it (config.json)
            raise ConfigError(f"{self.source}: '{self.where(key)}' = {value!r} is out of the 64-bit integer range")
        return value

    def choice(self, key: str, options: Sequence[str], default: str) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be one of {list(options)}, got {value!r}")
        return str(value)

    def positive(self, key: str, kind: type, default: Any, *, ceiling: int | None = None) -> Any:
        value = self.finite(key, kind, default)
        if value is not None and value <= 0:
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be > 0, got {value!r}")
        if value is not None and ceiling is not None and value > ceiling:
            raise ConfigError(
                f"{self.source}: '{self.where(key)}' = {value!r} is above the ceiling of {ceiling}; "
                f"set it to at most {ceiling}"
            )
        return value

    def non_negative(self, key: str, kind: type, default: Any) -> Any:
        value = self.finite(key, kind, default)
        if value is not None and value < 0:
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be >= 0, got {value!r}")
        return value

    def finite(self, key: str, kind: type, default: Any) -> Any:
        value = self.get(key, kind, default)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{self.source}: '{self.where(key)}' must be a finite number, got {value!r}")
        return value

    def sub(self, key: str, *, required: bool = False) -> _Reader | None:
        value = self.get(key, dict, None, required=required)
        return None if value is None else _Reader(self.source, self.where(key), value)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.seen)
        if unknown:
            hint = did_you_mean(unknown[0], self.seen)
            raise ConfigError(f"{self.source}: unknown key {self.where(unknown[0])!r}" + (f" ({hint})" if hint else "")
                              + (f" (and {unknown[1:]})" if unknown[1:] else ""))


def _endpoint(r: _Reader, name: str) -> Endpoint:
    api_url = r.get("api_url", str, required=True).rstrip("/")
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"{r.source}: '{r.where('api_url')}' must start with http:// or https://, got {api_url!r}")
    if api_url.endswith("/chat/completions"):
        api_url = api_url[: -len("/chat/completions")]
    if "api_key" in r.table:
        raise ConfigError(
            f"{r.source}: '{r.where('api_key')}' is not allowed: keys never sit in config files; "
            f"put the key in an environment variable and name it with 'api_key_env'"
        )
    # no concurrency set: the endpoint's own level is found as the run goes (limits.ConcurrencyGate, auto)
    concurrency = r.positive("concurrency", int, None, ceiling=MAX_CONCURRENCY)
    auto = concurrency is None
    if concurrency is None:
        concurrency = AUTO_MAX
    rpm, tpm = r.positive("rpm", float, None), r.positive("tpm", float, None)
    adaptive = r.get("adaptive_concurrency", bool, True)
    max_attempts = r.positive("max_attempts", int, RetryPolicy.max_attempts)
    max_time = r.positive("retry_max_time", float, RetryPolicy.max_time)
    connect = r.positive("connect_timeout", float, Timeouts.connect)
    read = r.positive("read_timeout", float, Timeouts.read)
    total = r.positive("timeout", float, Timeouts.total)
    model = r.get("model", str, name)
    api_key_env = r.get("api_key_env", str, None)
    headers = _extra_headers(r)
    query = _query_params(r)
    extra_body = r.get("extra_body", dict, {})
    for banned in ("model", "messages", "stream"):
        if banned in extra_body:
            raise ConfigError(f"{r.source}: '{r.where('extra_body.' + banned)}' is set by arena-engine, remove it")
    batch = _batch_options(r)
    try:  # the value objects check more (an empty name or model, ...): say which file and table
        return Endpoint(
            name=name,
            api_url=api_url,
            model=model,
            api_key_env=api_key_env,
            limits=Limits(concurrency=concurrency, rpm=rpm, tpm=tpm, adaptive=adaptive, auto=auto),
            retry=RetryPolicy(max_attempts=max_attempts, max_time=max_time),
            timeouts=Timeouts(connect=connect, read=read, total=total),
            extra_headers=headers,
            query_params=query,
            extra_body=dict(extra_body),
            batch=batch,
        )
    except ConfigError as exc:
        raise ConfigError(f"{r.source}: {r.path or 'the top level'}: {exc}") from None


def _batch_options(r: _Reader) -> BatchOptions | None:
    """`mode = "batch"` and its optional `batch` table (arena_engine.batch); None in live mode."""
    mode = r.choice("mode", ("live", "batch"), "live")
    b = r.sub("batch")
    if mode == "live":
        if b is not None:
            raise ConfigError(f"{r.source}: '{r.where('batch')}' is set but '{r.where('mode')}' is \"live\": "
                              "set mode = \"batch\" or remove the table")
        return None
    b = b or _Reader(r.source, r.where("batch"), {})
    d = BatchOptions()
    try:
        opts = BatchOptions(
            max_requests=b.positive("max_requests", int, d.max_requests),
            max_bytes=b.positive("max_bytes", int, d.max_bytes),
            completion_window=b.get("completion_window", str, d.completion_window),
            poll_interval=b.positive("poll_interval", float, d.poll_interval),
            discount=b.finite("discount", float, d.discount),
            max_wait=b.positive("max_wait", float, d.max_wait),
            resubmits=b.non_negative("resubmits", int, d.resubmits),
            protocol=b.choice("protocol", PROTOCOLS, d.protocol),
        )
    except ConfigError as exc:
        raise ConfigError(f"{r.source}: {r.where('batch')}: {exc}") from None
    b.done()
    return opts


#: Header and query names whose values are secrets: they must come from the environment.
_SECRET_NAME = re.compile(r"auth|key|token|secret|password|cookie|signature", re.IGNORECASE)


def _extra_headers(r: _Reader) -> dict[str, str | EnvVar]:
    """`extra_headers = { "api-key" = { env = "AZURE_KEY" }, "x-team" = "evals" }`: a string, or a table
    naming the environment variable that holds the value (required for secrets such as keys)."""
    table = r.get("extra_headers", dict, {})
    out: dict[str, str | EnvVar] = {}
    for header, value in table.items():
        where = r.where(f"extra_headers.{header}")
        if isinstance(value, dict):
            if set(value) != {"env"} or not isinstance(value["env"], str) or not value["env"]:
                raise ConfigError(f"{r.source}: '{where}' must be a string or {{ env = \"VARIABLE\" }}")
            out[header] = EnvVar(value["env"])
        elif isinstance(value, str):
            if _SECRET_NAME.search(header):
                raise ConfigError(
                    f"{r.source}: '{where}' looks like a secret and is not allowed as text in a config file: "
                    f"put it in an environment variable and write {{ env = \"VARIABLE\" }}"
                )
            out[header] = value
        else:  # the value is not echoed: it may be a secret
            raise ConfigError(f"{r.source}: '{where}' must be a string or {{ env = \"VARIABLE\" }}")
    return out


def _query_params(r: _Reader) -> dict[str, str]:
    """`query_params = { "api-version" = "2024-10-21" }`: added to every request's URL. No secrets: a
    URL is printed in logs and errors (send keys in a header)."""
    table = r.get("query_params", dict, {})
    out: dict[str, str] = {}
    for name, value in table.items():
        where = r.where(f"query_params.{name}")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{r.source}: '{where}' must be a string or a number, got {value!r}")
        if _SECRET_NAME.search(name):
            raise ConfigError(
                f"{r.source}: '{where}' looks like a secret; URLs show up in logs, so send it in "
                f"'extra_headers' with {{ env = \"VARIABLE\" }}"
            )
        out[name] = str(value)
    return out


def _generation(r: _Reader, default: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters, checked against the chat API's ranges (see arena_engine.chat_params)."""
    return check_generation(r.get("generation", dict, default), r.source, r.where("generation"))


def _text_or_file(r: _Reader, key: str, base: Path) -> str | None:
    value = r.get(key, str, None)
    file_value = r.get(key + "_file", str, None)
    if value is not None and file_value is not None:
        raise ConfigError(f"{r.source}: set only one of '{r.where(key)}' and '{r.where(key + '_file')}'")
    if file_value is not None:
        path = (base / file_value).expanduser()
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{r.source}: '{r.where(key + '_file')}': cannot read {path}: {exc.strerror}") from None
    return value


def config_from_dict(data: Mapping[str, Any], *, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from parsed TOML/JSON data, checking every key."""
    if not isinstance(data, Mapping):  # a JSON file holding a list, say
        raise ConfigError(f"{source}: a config is a table of sections (a JSON object), not {type(data).__name__}")
    base = base_dir or Path.cwd()
    top = _Reader(source, "", dict(data))
    run = top.sub("run") or _Reader(source, "run", {})
    output_dir = Path(run.get("output_dir", str, "outputs/arena")).expanduser()
    seed = run.get("seed", int, 0)
    mode = run.choice("mode", ("baseline", "all_pairs"), "baseline")
    max_pairs = run.positive("max_pairs_per_query", int, None)
    in_flight = run.positive("queries_in_flight", int, None, ceiling=MAX_QUERIES_IN_FLIGHT)
    fsync_interval = run.positive("fsync_interval", float, 1.0)
    run.done()

    datasets = []
    for i, raw in enumerate(top.get("datasets", list, required=True)):
        d = _Reader(source, f"datasets[{i}]", raw)
        path = Path(d.get("path", str, required=True)).expanduser()
        subsets = d.get("subsets", list, None)
        if subsets is not None and not all(isinstance(s, str) for s in subsets):
            raise ConfigError(f"{source}: '{d.where('subsets')}' must be a list of strings")
        if subsets == []:
            raise ConfigError(f"{source}: '{d.where('subsets')}' is empty: name at least one subset, "
                              "or leave the key out to use every subset of the dataset")
        datasets.append(
            DatasetConfig(
                name=d.get("name", str, path.name),
                path=path if path.is_absolute() else base / path,
                subsets=tuple(subsets) if subsets is not None else None,
                allow_empty=d.get("allow_empty", bool, False),
            )
        )
        d.done()
    if not datasets:
        raise ConfigError(f"{source}: 'datasets' is empty: add at least one [[datasets]] table")
    if len({d.name for d in datasets}) != len(datasets):
        raise ConfigError(f"{source}: two datasets share a name; give each a distinct 'name'")

    models = []
    for i, raw in enumerate(top.get("models", list, required=True)):
        m = _Reader(source, f"models[{i}]", raw)
        name = m.get("name", str, required=True)
        report = m.get("evalscope_report", str, None)
        mismatch = m.choice("evalscope_mismatch", ("error", "warn"), "error")
        if "evalscope_mismatch" in m.table and report is None:
            raise ConfigError(f"{source}: '{m.where('evalscope_mismatch')}' needs 'evalscope_report' in the same table")
        models.append(
            ModelConfig(
                name=name,
                endpoint=_endpoint(m, name) if report is None or "api_url" in m.table else _import_endpoint(m, name),
                generation=_generation(m, {}),
                price_in=m.non_negative("price_in", float, None),
                price_out=m.non_negative("price_out", float, None),
                evalscope_report=(base / report) if report else None,
                identity=_identity(m),
                reuse_answers_of=m.get("reuse_answers_of", str, None),
                evalscope_mismatch=mismatch,  # type: ignore[arg-type]
                system_prompt=_system_prompt(m, base, report),
                system_prompt_combine=m.choice("system_prompt_combine", ("prepend", "replace", "fallback"),  # type: ignore[arg-type]
                                               "prepend"),
            )
        )
        _needs_budget(m, models[-1].endpoint, models[-1].generation)
        m.done()
    if len(models) < 2:
        raise ConfigError(f"{source}: an arena needs at least two [[models]] (a baseline and a candidate)")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be distinct, got {names}")
    _check_reuse(source, models)

    arena = top.sub("arena") or _Reader(source, "arena", {})
    baseline = arena.get("baseline", str, names[0])
    if baseline not in names:
        raise ConfigError(f"{source}: 'arena.baseline' = {baseline!r} is not one of the models {names}")
    stop = _stop(arena)
    arena.done()

    judges = _judges(top, source, base, names)
    panel = _panel(top, source, base, judges)
    if stop.active and max_pairs is not None:
        raise ConfigError(f"{source}: 'arena.stop' chooses the pairs itself; leave out 'run.max_pairs_per_query'")
    if stop.active and panel.combine == "each" and len(judges) > 1 and not panel.cascade:
        raise ConfigError(f"{source}: 'arena.stop' needs one win rate per candidate to decide on, and "
                          "'panel.combine' = \"each\" rates every judge alone; use \"mean\" or \"majority\"")

    rt = top.sub("rating") or _Reader(source, "rating", {})
    ci = rt.finite("ci", float, 0.95)
    if not 0 < ci < 1:
        raise ConfigError(f"{source}: 'rating.ci' must be between 0 and 1, got {ci}")
    rating = RatingConfig(
        rounds=rt.positive("rounds", int, 1000),
        ci=ci,
        strong_weight=rt.positive("strong_weight", int, 3),
        method=rt.choice("method", ("bt", "elo", "elo-online"), "bt"),  # type: ignore[arg-type]
        interval=rt.choice("interval", ("score", "bootstrap", "sandwich"), "score"),  # type: ignore[arg-type]
        overall=rt.choice("overall", ("pooled", "evalscope"), "pooled"),  # type: ignore[arg-type]
    )
    if rating.method == "elo-online":  # legacy online Elo only resamples (its bounds are a spread)
        if rating.interval == "sandwich":
            raise ConfigError(f"{source}: 'rating.interval' = \"sandwich\" needs 'rating.method' = \"bt\" or \"elo\"")
        rating = replace(rating, interval="bootstrap")
    rt.done()
    top.done()
    return RunConfig(
        output_dir=output_dir if output_dir.is_absolute() else base / output_dir,
        datasets=tuple(datasets),
        models=tuple(models),
        judge=judges[0],
        judges=judges if len(judges) > 1 or "judges" in top.table else (),
        panel=panel,
        stop=stop,
        baseline=baseline,
        seed=seed,
        mode=mode,  # type: ignore[arg-type]
        max_pairs_per_query=max_pairs,
        queries_in_flight=in_flight,
        rating=rating,
        fsync_interval=fsync_interval,
    )


def _stop(arena: _Reader) -> StopConfig:
    """``[arena] stop = "decided" | "never"``, ``stop = { halfwidth = 0.03 }`` or an ``[arena.stop]`` table."""
    raw = arena.get("stop", (str, dict), None)
    if raw is None:
        return StopConfig()
    if isinstance(raw, str):
        if raw not in ("decided", "never"):
            hint = " (for a precision target write stop = { halfwidth = 0.03 })" if raw == "halfwidth" else ""
            raise ConfigError(f"{arena.source}: 'arena.stop' = {raw!r}: must be \"decided\", \"never\" or a table "
                              f"such as {{ halfwidth = 0.03 }}{hint}")
        return StopConfig(rule=raw)  # type: ignore[arg-type]
    t = _Reader(arena.source, arena.where("stop"), raw)
    rule = t.choice("rule", RULES, "halfwidth" if "halfwidth" in t.table else "decided")
    halfwidth = t.finite("halfwidth", float, StopConfig.halfwidth)
    if not 0.0 < halfwidth < 0.5:
        raise ConfigError(f"{t.source}: '{t.where('halfwidth')}' must be between 0 and 0.5, got {halfwidth}")
    if "halfwidth" in t.table and rule != "halfwidth":
        raise ConfigError(f"{t.source}: '{t.where('halfwidth')}' needs rule = \"halfwidth\", not {rule!r}")
    margin = t.finite("margin", float, StopConfig.margin)
    if not 0.0 <= margin < 0.5:
        raise ConfigError(f"{t.source}: '{t.where('margin')}' must be in [0, 0.5), got {margin}")
    if "margin" in t.table and rule != "decided":
        raise ConfigError(f"{t.source}: '{t.where('margin')}' is used only by rule = \"decided\", not {rule!r}")
    confidence = t.finite("confidence", float, StopConfig.confidence)
    if not 0.0 < confidence < 1.0:
        raise ConfigError(f"{t.source}: '{t.where('confidence')}' must be between 0 and 1, got {confidence}")
    min_queries = t.positive("min_queries", int, StopConfig.min_queries)
    block = t.positive("block", int, StopConfig.block)
    t.done()
    return StopConfig(rule=rule, margin=margin, halfwidth=halfwidth, min_queries=min_queries,  # type: ignore[arg-type]
                      confidence=confidence, block=block)


def _judge(j: _Reader, base: Path, models: Sequence[str]) -> JudgeConfig:
    judge_name = j.get("name", str, required=True)
    related = j.get("related_to", list, [])
    if not all(isinstance(r, str) for r in related):
        raise ConfigError(f"{j.source}: '{j.where('related_to')}' must be a list of model names")
    unknown = [r for r in related if r not in models]
    if unknown:
        raise ConfigError(f"{j.source}: '{j.where('related_to')}' names {unknown[0]!r}, which is not one of the "
                          f"models {list(models)}")
    judge = JudgeConfig(
        name=judge_name,
        endpoint=_endpoint(j, judge_name),
        generation=_generation(j, {"temperature": 0.0}),
        system_prompt=_text_or_file(j, "system_prompt", base),
        template=_text_or_file(j, "template", base),
        parse_retries=j.non_negative("parse_retries", int, 2),
        structured_output=j.get("structured_output", bool, False),
        price_in=j.non_negative("price_in", float, None),
        price_out=j.non_negative("price_out", float, None),
        identity=_identity(j),
        related_to=tuple(related),
    )
    if judge.template is not None:
        for needed in ("{question}", "{answer_a}", "{answer_b}"):
            if needed not in judge.template:
                raise ConfigError(f"{j.source}: '{j.where('template')}' lacks the placeholder {needed}")
    _needs_budget(j, judge.endpoint, judge.generation)
    j.done()
    return judge


def _needs_budget(r: _Reader, endpoint: Endpoint, generation: Mapping[str, Any]) -> None:
    """Anthropic's Messages API requires max_tokens: an endpoint batched through it must set one."""
    if endpoint.batch is None or endpoint.batch.protocol != "anthropic":
        return
    if not any(k in generation or k in endpoint.extra_body for k in ("max_tokens", "max_completion_tokens")):
        raise ConfigError(f"{r.source}: '{r.where('generation.max_tokens')}' is required with "
                          f"{r.where('batch.protocol')} = \"anthropic\" (the Messages API requires max_tokens)")


def _judges(top: _Reader, source: str, base: Path, models: Sequence[str]) -> tuple[JudgeConfig, ...]:
    """``[judge]`` (one judge) or ``[[judges]]`` (a panel): exactly one of them."""
    if ("judge" in top.table) == ("judges" in top.table):
        top.seen.update(("judge", "judges"))
        raise ConfigError(f"{source}: set exactly one of '[judge]' (one judge) and '[[judges]]' (a panel)")
    if "judge" in top.table:
        j = top.sub("judge", required=True)
        assert j is not None
        return (_judge(j, base, models),)
    raw = top.get("judges", list)
    if not raw:
        raise ConfigError(f"{source}: 'judges' is empty: add at least one [[judges]] table")
    judges = tuple(_judge(_Reader(source, f"judges[{i}]", t), base, models) for i, t in enumerate(raw))
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: judge names must be distinct, got {names}")
    return judges


def _panel(top: _Reader, source: str, base: Path, judges: Sequence[JudgeConfig]) -> PanelConfig:
    p = top.sub("panel")
    if p is None:
        return PanelConfig()
    combine = p.choice("combine", COMBINE_MODES, "mean")
    cascade = p.get("cascade", list, [])
    names = [j.name for j in judges]
    if not all(isinstance(c, str) for c in cascade):
        raise ConfigError(f"{source}: 'panel.cascade' must be a list of judge names")
    for c in cascade:
        if c not in names:
            raise ConfigError(f"{source}: 'panel.cascade' names {c!r}, which is not one of the judges {names}")
    if len(set(cascade)) != len(cascade):
        raise ConfigError(f"{source}: 'panel.cascade' names a judge twice: {cascade}")
    if len(cascade) == 1:
        raise ConfigError(f"{source}: 'panel.cascade' needs at least two judges (cheapest first), got {cascade}")
    if cascade and "combine" in p.table:
        raise ConfigError(f"{source}: set only one of 'panel.combine' and 'panel.cascade' (a cascade rates each "
                          "battle by the last judge that saw it)")
    if cascade and len(cascade) != len(names):
        unused = [n for n in names if n not in cascade]
        raise ConfigError(f"{source}: 'panel.cascade' leaves out the judge(s) {unused}; name every judge in it")
    calibration = p.finite("calibration", float, 0.0)
    if not 0.0 <= calibration <= 1.0:
        raise ConfigError(f"{source}: 'panel.calibration' must be between 0 and 1, got {calibration}")
    if calibration and not cascade:
        raise ConfigError(f"{source}: 'panel.calibration' needs 'panel.cascade'")
    labels = p.get("human_labels", str, None)
    p.done()
    path = None
    if labels is not None:
        path = Path(labels).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(f"{source}: 'panel.human_labels' = {labels!r}: no such file ({path})")
    return PanelConfig(combine=combine, cascade=tuple(cascade), calibration=calibration,  # type: ignore[arg-type]
                       human_labels=path)


def _system_prompt(m: _Reader, base: Path, report: str | None) -> str | None:
    value = _text_or_file(m, "system_prompt", base)
    if value is not None and not value.strip():
        raise ConfigError(f"{m.source}: '{m.where('system_prompt')}' is empty (leave it out for none)")
    if value is not None and report is not None:
        raise ConfigError(f"{m.source}: '{m.where('system_prompt')}' cannot change answers imported with "
                          "'evalscope_report'; remove one of them")
    return value


def _identity(r: _Reader) -> str | None:
    value = r.get("identity", str, None)
    if value is not None and not value.strip():
        raise ConfigError(f"{r.source}: '{r.where('identity')}' must not be empty (leave it out for the default)")
    return value


def _check_reuse(source: str, models: Sequence[ModelConfig]) -> None:
    """``reuse_answers_of`` must name another configured model that sends the same request."""
    by_name = {m.name: (i, m) for i, m in enumerate(models)}
    for i, m in enumerate(models):
        other_name = m.reuse_answers_of
        if other_name is None:
            continue
        where = f"{source}: 'models[{i}].reuse_answers_of'"
        if m.identity is not None:
            raise ConfigError(f"{where}: set only one of 'identity' and 'reuse_answers_of' for model {m.name!r}")
        if other_name not in by_name or other_name == m.name:
            raise ConfigError(f"{where} = {other_name!r} must name another model, one of "
                              f"{[n for n in by_name if n != m.name]}")
        other = by_name[other_name][1]
        if other.reuse_answers_of is not None:
            raise ConfigError(f"{where} = {other_name!r}: that model reuses {other.reuse_answers_of!r} itself; "
                              f"name {other.reuse_answers_of!r} directly")
        if m.evalscope_report is not None or other.evalscope_report is not None:
            raise ConfigError(f"{where}: imported (evalscope_report) answers are not shared this way")
        if (other.system_prompt, other.system_prompt_combine) != (m.system_prompt, m.system_prompt_combine):
            raise ConfigError(f"{where} = {other_name!r}: the two models must have the same system_prompt "
                              "(and system_prompt_combine) to share answers")
        if other.endpoint.model != m.endpoint.model or dict(other.generation) != dict(m.generation):
            raise ConfigError(
                f"{where} = {other_name!r}: the two models must send the same model id and generation params "
                f"to share answers (got {m.endpoint.model!r} {dict(m.generation)} and "
                f"{other.endpoint.model!r} {dict(other.generation)})"
            )


def _import_endpoint(m: _Reader, name: str) -> Endpoint:
    """A model whose answers come from an EvalScope run needs no endpoint; keep a placeholder."""
    return Endpoint(name=name, api_url="http://imported.invalid/v1", model=m.get("model", str, name))


def load_config(path: str | Path) -> RunConfig:
    """Load a run config from a TOML or JSON file. Relative paths in it are relative to the file."""
    path = Path(path)
    data = read_config_file(path)
    return config_from_dict(data, source=str(path), base_dir=path.parent.resolve())
