"""Reading a config file (TOML or JSON) into the config values, strictly, by walking their fields.

Each field's metadata (`config_fields.key`) says its key, the type and range it takes and its default;
`config_reader.values` reads a table's plain keys from it, and the keys that need more (paths, the
text-or-file prompts, name lists, the checks between keys) have their own readers here; an endpoint's
keys are read by `config_endpoints`. Every unknown key, wrong type and missing required key is a
:class:`ConfigError` that names the file and the key path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .chat_params import check_generation
from .config_endpoints import endpoint, needs_budget
from .config_fields import config_default
from .config_reader import Reader, field_of, read, values
from .config_values import DatasetConfig, JudgeConfig, ModelConfig, RatingConfig, RunConfig
from .configfile import read_config_file
from .endpoint_config import Endpoint
from .errors import ConfigError
from .panel import PanelConfig
from .stop_rules import StopConfig

__all__ = ["Reader", "config_from_dict", "load_config"]


def _generation(r: Reader, default: Mapping[str, Any]) -> dict[str, Any]:
    """The request parameters, checked against the chat API's ranges (see arena_engine.chat_params)."""
    return check_generation(r.get("generation", dict, default), r.source, r.where("generation"))


def _text_or_file(r: Reader, key: str, base: Path) -> str | None:
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


def _text(r: Reader, name: str, base: Path) -> Callable[[], str | None]:
    return lambda: _text_or_file(r, name, base)


def _names(r: Reader, key: str, known: Sequence[str], what: str) -> list[str]:
    """A list of names, each one of ``known`` (a judge's `related_to`)."""
    value = r.get(key, list, [])
    if not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{r.source}: '{r.where(key)}' must be a list of {what} names")
    unknown = [v for v in value if v not in known]
    if unknown:
        raise ConfigError(f"{r.source}: '{r.where(key)}' names {unknown[0]!r}, which is not one of the "
                          f"{what}s {list(known)}")
    return list(value)


def _run_values(run: Reader, base: Path) -> dict[str, Any]:
    def output_dir() -> Path:
        path = Path(read(run, *field_of(RunConfig, "output_dir"))).expanduser()
        return path if path.is_absolute() else base / path

    return values(run, RunConfig, {"output_dir": output_dir}, table="run")


def _dataset(d: Reader, base: Path) -> DatasetConfig:
    path = Path(read(d, *field_of(DatasetConfig, "path"))).expanduser()

    def subsets() -> tuple[str, ...] | None:
        value = d.get("subsets", list, None)
        if value is not None and not all(isinstance(s, str) for s in value):
            raise ConfigError(f"{d.source}: '{d.where('subsets')}' must be a list of strings")
        if value == []:
            raise ConfigError(f"{d.source}: '{d.where('subsets')}' is empty: name at least one subset, "
                              "or leave the key out to use every subset of the dataset")
        return tuple(value) if value is not None else None

    full = path if path.is_absolute() else base / path
    dataset = DatasetConfig(**values(d, DatasetConfig, {"path": lambda: full, "subsets": subsets},
                                      defaults={"name": path.name}))
    d.done()
    return dataset


def _datasets(top: Reader, source: str, base: Path) -> list[DatasetConfig]:
    datasets = [_dataset(Reader(source, f"datasets[{i}]", raw), base)
                for i, raw in enumerate(top.get("datasets", list, required=True))]
    if not datasets:
        raise ConfigError(f"{source}: 'datasets' is empty: add at least one [[datasets]] table")
    if len({d.name for d in datasets}) != len(datasets):
        raise ConfigError(f"{source}: two datasets share a name; give each a distinct 'name'")
    return datasets


def _model(m: Reader, base: Path) -> ModelConfig:
    name = m.get("name", str, required=True)
    report = m.get("evalscope_report", str, None)
    mismatch = read(m, *field_of(ModelConfig, "evalscope_mismatch"))
    if "evalscope_mismatch" in m.table and report is None:
        raise ConfigError(f"{m.source}: '{m.where('evalscope_mismatch')}' needs 'evalscope_report' in the same table")
    imported = report is not None and "api_url" not in m.table
    model = ModelConfig(**values(m, ModelConfig, {
        "name": lambda: name,
        # a model whose answers come from an EvalScope run needs no endpoint; keep a placeholder
        "endpoint": lambda: Endpoint(name=name, api_url="http://imported.invalid/v1", model=m.get("model", str, name))
        if imported else endpoint(m, name),
        "generation": lambda: _generation(m, config_default(*field_of(ModelConfig, "generation"))),
        "evalscope_report": lambda: (base / report) if report else None, "evalscope_mismatch": lambda: mismatch,
        "identity": lambda: _identity(m),
        "system_prompt": lambda: _system_prompt(m, base, report),
    }))
    needs_budget(m, model.endpoint, model.generation)
    m.done()
    return model


def config_from_dict(data: Mapping[str, Any], *, source: str = "<config>", base_dir: Path | None = None) -> RunConfig:
    """Build a :class:`RunConfig` from parsed TOML/JSON data, checking every key."""
    if not isinstance(data, Mapping):  # a JSON file holding a list, say
        raise ConfigError(f"{source}: a config is a table of sections (a JSON object), not {type(data).__name__}")
    base = base_dir or Path.cwd()
    top = Reader(source, "", dict(data))
    run = top.sub("run") or Reader(source, "run", {})
    run_values = _run_values(run, base)
    run.done()
    datasets = _datasets(top, source, base)

    models = [_model(Reader(source, f"models[{i}]", raw), base)
              for i, raw in enumerate(top.get("models", list, required=True))]
    if len(models) < 2:
        raise ConfigError(f"{source}: an arena needs at least two [[models]] (a baseline and a candidate)")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: model names must be distinct, got {names}")
    _check_reuse(source, models)

    arena = top.sub("arena") or Reader(source, "arena", {})
    arena_values = values(arena, RunConfig, {
        "baseline": lambda: arena.get("baseline", str, names[0]), "stop": lambda: _stop(arena)}, table="arena")
    if arena_values["baseline"] not in names:
        raise ConfigError(f"{source}: 'arena.baseline' = {arena_values['baseline']!r} is not one of the models {names}")
    arena.done()
    stop = arena_values["stop"]

    judges = _judges(top, source, base, names)
    panel = _panel(top, source, base, judges)
    if stop.active and run_values["max_pairs_per_query"] is not None:
        raise ConfigError(f"{source}: 'arena.stop' chooses the pairs itself; leave out 'run.max_pairs_per_query'")
    if stop.active and panel.combine == "each" and len(judges) > 1 and not panel.cascade:
        raise ConfigError(f"{source}: 'arena.stop' needs one win rate per candidate to decide on, and "
                          "'panel.combine' = \"each\" rates every judge alone; use \"mean\" or \"majority\"")

    rt = top.sub("rating") or Reader(source, "rating", {})
    rating = RatingConfig(**values(rt, RatingConfig))
    if rating.method == "elo-online":  # legacy online Elo only resamples (its bounds are a spread)
        if rating.interval == "sandwich":
            raise ConfigError(f"{source}: 'rating.interval' = \"sandwich\" needs 'rating.method' = \"bt\" or \"elo\"")
        rating = replace(rating, interval="bootstrap")
    rt.done()
    top.done()
    return RunConfig(datasets=tuple(datasets), models=tuple(models), judge=judges[0],
                     judges=judges if len(judges) > 1 or "judges" in top.table else (), panel=panel,
                     rating=rating, **run_values, **arena_values)


def _stop(arena: Reader) -> StopConfig:
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
    t = Reader(arena.source, arena.where("stop"), raw)
    rule = read(t, *field_of(StopConfig, "rule"), "halfwidth" if "halfwidth" in t.table else "decided")
    halfwidth = read(t, *field_of(StopConfig, "halfwidth"))
    if "halfwidth" in t.table and rule != "halfwidth":
        raise ConfigError(f"{t.source}: '{t.where('halfwidth')}' needs rule = \"halfwidth\", not {rule!r}")
    margin = read(t, *field_of(StopConfig, "margin"))
    if "margin" in t.table and rule != "decided":
        raise ConfigError(f"{t.source}: '{t.where('margin')}' is used only by rule = \"decided\", not {rule!r}")
    got = values(t, StopConfig, {"rule": lambda: rule, "halfwidth": lambda: halfwidth, "margin": lambda: margin})
    t.done()
    return StopConfig(**got)


def _judge(j: Reader, base: Path, models: Sequence[str]) -> JudgeConfig:
    judge_name = j.get("name", str, required=True)
    related = _names(j, "related_to", models, "model")
    judge = JudgeConfig(**values(j, JudgeConfig, {
        "name": lambda: judge_name, "endpoint": lambda: endpoint(j, judge_name),
        "generation": lambda: _generation(j, config_default(*field_of(JudgeConfig, "generation"))),
        "identity": lambda: _identity(j), "system_prompt": _text(j, "system_prompt", base),
        "template": _text(j, "template", base), "related_to": lambda: tuple(related)}))
    if judge.template is not None:
        for needed in ("{question}", "{answer_a}", "{answer_b}"):
            if needed not in judge.template:
                raise ConfigError(f"{j.source}: '{j.where('template')}' lacks the placeholder {needed}")
    needs_budget(j, judge.endpoint, judge.generation)
    j.done()
    return judge


def _judges(top: Reader, source: str, base: Path, models: Sequence[str]) -> tuple[JudgeConfig, ...]:
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
    judges = tuple(_judge(Reader(source, f"judges[{i}]", t), base, models) for i, t in enumerate(raw))
    names = [j.name for j in judges]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: judge names must be distinct, got {names}")
    return judges


def _panel(top: Reader, source: str, base: Path, judges: Sequence[JudgeConfig]) -> PanelConfig:
    p = top.sub("panel")
    if p is None:
        return PanelConfig()
    names = [j.name for j in judges]

    def cascade() -> tuple[str, ...]:
        value = p.get("cascade", list, [])
        if not all(isinstance(c, str) for c in value):
            raise ConfigError(f"{source}: 'panel.cascade' must be a list of judge names")
        for c in value:
            if c not in names:
                raise ConfigError(f"{source}: 'panel.cascade' names {c!r}, which is not one of the judges {names}")
        if len(set(value)) != len(value):
            raise ConfigError(f"{source}: 'panel.cascade' names a judge twice: {value}")
        if len(value) == 1:
            raise ConfigError(f"{source}: 'panel.cascade' needs at least two judges (cheapest first), got {value}")
        if value and "combine" in p.table:
            raise ConfigError(f"{source}: set only one of 'panel.combine' and 'panel.cascade' (a cascade rates each "
                              "battle by the last judge that saw it)")
        if value and len(value) != len(names):
            unused = [n for n in names if n not in value]
            raise ConfigError(f"{source}: 'panel.cascade' leaves out the judge(s) {unused}; name every judge in it")
        return tuple(value)

    got = values(p, PanelConfig, {"cascade": cascade, "human_labels": lambda: p.get("human_labels", str, None)})
    if got["calibration"] and not got["cascade"]:
        raise ConfigError(f"{source}: 'panel.calibration' needs 'panel.cascade'")
    p.done()
    labels = got["human_labels"]
    if labels is not None:
        path = Path(labels).expanduser()
        got["human_labels"] = path = path if path.is_absolute() else base / path
        if not path.is_file():
            raise ConfigError(f"{source}: 'panel.human_labels' = {labels!r}: no such file ({path})")
    return PanelConfig(**got)


def _system_prompt(m: Reader, base: Path, report: str | None) -> str | None:
    value = _text_or_file(m, "system_prompt", base)
    if value is not None and not value.strip():
        raise ConfigError(f"{m.source}: '{m.where('system_prompt')}' is empty (leave it out for none)")
    if value is not None and report is not None:
        raise ConfigError(f"{m.source}: '{m.where('system_prompt')}' cannot change answers imported with "
                          "'evalscope_report'; remove one of them")
    return value


def _identity(r: Reader) -> str | None:
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


def load_config(path: str | Path) -> RunConfig:
    """Load a run config from a TOML or JSON file. Relative paths in it are relative to the file."""
    path = Path(path)
    data = read_config_file(path)
    return config_from_dict(data, source=str(path), base_dir=path.parent.resolve())
