"""docs/config.md against the loaders: every key read is documented, every documented key is accepted.

The run config's keys are found by recording every key `config_from_dict` reads (each `_Reader` call)
while it loads a config that sets every documented key; the simulator's are its dataclasses' fields.
"""

from __future__ import annotations

import copy
import re
import tomllib
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import pytest

from arena_engine import config as config_mod
from arena_engine.config import config_from_dict
from arena_engine.errors import ConfigError
from arena_engine.sim.config import Faults, Latency, SimConfig, SimModel

DOC = Path(__file__).resolve().parents[1] / "docs" / "config.md"

# reference heading -> the loader's table path ("" = top level; "endpoint" = each model and the judge)
RUN_SECTIONS = {
    "Top level": "",
    "`[run]`": "run",
    "`[[datasets]]`": "datasets",
    "`[[models]]`": "models",
    "`[judge]`": "judge",
    "`[panel]`": "panel",
    "Endpoint keys (each `[[models]]`, `[judge]` and `[[judges]]`)": "endpoint",
    "Endpoint `batch` table (with `mode = \"batch\"`)": "endpoint.batch",
    "`[arena]`": "arena",
    "`[arena.stop]`": "arena.stop",
    "`[rating]`": "rating",
}
SIM_SECTIONS = {
    "Simulator: top level": SimConfig,
    "Simulator: `[[models]]`": SimModel,
    "Simulator: `latency`": Latency,
    "Simulator: `[faults]`": Faults,
}
ENDPOINT_TABLES = ("models", "judge")
# simulator model keys for judges only, and the keys they need beside them
SIM_JUDGE_KEYS: dict[str, dict[str, Any]] = {"judge_noise": {}, "position_bias": {}, "prefers": {},
                                             "self_preference": {"prefers": "m"}}


def _reference(chapter: str) -> dict[str, dict[str, dict[str, str]]]:
    """{section heading: {key: {column: cell}}} of one `## ...` chapter of docs/config.md."""
    text = DOC.read_text(encoding="utf-8")
    match = re.search(rf"^## {re.escape(chapter)}.*?$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/config.md has no chapter '## {chapter}'"
    out: dict[str, dict[str, dict[str, str]]] = {}
    for section in re.split(r"^### ", match.group(1), flags=re.M)[1:]:
        heading, _, body = section.partition("\n")
        rows = [line for line in body.splitlines() if line.startswith("|")]
        assert rows, f"section {heading!r} has no table"
        header = [c.strip() for c in rows[0].strip("|").split("|")]
        assert header == ["key", "type", "default", "range", "example", "meaning"], (heading, header)
        table: dict[str, dict[str, str]] = {}
        for line in rows[2:]:
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
            key = cells[0].strip("`")
            assert key not in table, f"{heading}: {key!r} documented twice"
            table[key] = dict(zip(header, cells, strict=True))
        out[heading.strip()] = table
    return out


def _example(row: dict[str, str]) -> Any:
    raw = row["example"]
    assert raw.startswith("`") and raw.endswith("`"), f"example {raw!r} must be one TOML value in backticks"
    return tomllib.loads("v = " + raw[1:-1])["v"]


def _base(tmp: Path) -> dict[str, Any]:
    (tmp / "judge_system.txt").write_text("Be strict.", encoding="utf-8")
    (tmp / "judge_template.txt").write_text("{question} {answer_a} {answer_b}", encoding="utf-8")
    (tmp / "system.txt").write_text("Answer briefly.", encoding="utf-8")
    (tmp / "labels.jsonl").write_text('{"query_id": "1", "model_a": "cand", "model_b": "qwen2.5-72b", "winner": "tie"}\n',
                                      encoding="utf-8")
    return {
        "datasets": [{"path": "data/qa"}],
        "models": [
            {"name": "qwen2.5-72b", "api_url": "http://127.0.0.1:1/v1"},
            {"name": "cand", "api_url": "http://127.0.0.1:1/v1"},
        ],
        "judge": {"name": "judge", "api_url": "http://127.0.0.1:1/v1"},
    }


# keys that are only valid together with others (the loader says so; the docs' range column too)
COMPANIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("models", "evalscope_mismatch"): {"evalscope_report": "reports/m"},
    ("models", "reuse_answers_of"): {"model": "qwen2.5-72b"},
    ("panel", "calibration"): {"cascade": ["judge", "judge2"]},
    ("models", "batch"): {"mode": "batch"},
    ("judge", "batch"): {"mode": "batch"},
}
# where the example goes: a candidate model (index 1), so the baseline stays as it is
TARGET = {"models": ("models", 1), "datasets": ("datasets", 0)}
# the examples for the top-level tables are whole tables; two keys need their siblings kept
SKIP_TOP_EXAMPLE = {"datasets", "models", "judge", "judges"}


def _panel_base(base: dict[str, Any]) -> dict[str, Any]:
    """`base` with a panel of two judges instead of its one judge."""
    data = copy.deepcopy(base)
    judge = data.pop("judge")
    data["judges"] = [judge, {**judge, "name": "judge2"}]
    return data


def _with(base: dict[str, Any], table: str, key: str, value: Any) -> list[dict[str, Any]]:
    """Configs that set `key` = `value` in `table` (both endpoint tables for "endpoint")."""
    out = []
    if table == "endpoint.batch":  # a key of an endpoint's batch table
        for t in ENDPOINT_TABLES:
            data = copy.deepcopy(base)
            target = data[t][1] if t == "models" else data[t]
            target.update(mode="batch", batch={key: value})
            out.append(data)
        return out
    tables = ENDPOINT_TABLES if table == "endpoint" else (table,)
    for t in tables:
        data = _panel_base(base) if t == "panel" else copy.deepcopy(base)
        if t == "":
            data[key] = value
            if key == "arena":  # the baseline named in the example is one of the models
                data["models"][1]["name"] = value["baseline"]
            out.append(data)
            continue
        if t in TARGET:
            name, index = TARGET[t]
            target = data[name][index]
        else:  # a nested table ("arena.stop") is set inside its parent
            target = data
            for part in t.split("."):
                target = target.setdefault(part, {})
        target[key] = value
        if (t, key) == ("arena", "baseline"):
            data["models"][1]["name"] = value
        target.update(COMPANIONS.get((t, key), {}))
        if t == "models" and key == "evalscope_report":
            target.pop("api_url")
        out.append(data)
    return out


def test_every_documented_run_key_is_accepted(tmp_path: Path) -> None:
    ref = _reference("Reference")
    assert set(ref) == set(RUN_SECTIONS), f"reference sections {sorted(ref)}"
    base = _base(tmp_path)
    for heading, rows in ref.items():
        table = RUN_SECTIONS[heading]
        for key, row in rows.items():
            if table == "" and key == "judges":  # a panel replaces the one judge
                config_from_dict({**{k: v for k, v in base.items() if k != "judge"}, key: _example(row)},
                                 source="docs", base_dir=tmp_path)
                continue
            if table == "" and key in SKIP_TOP_EXAMPLE:
                config_from_dict({**base, key: _example(row)} if key != "models" else
                                 {**base, "models": _example(row), "arena": {"baseline": "a"}},
                                 source="docs", base_dir=tmp_path)
                continue
            for data in _with(base, table, key, _example(row)):
                try:
                    config_from_dict(data, source="docs", base_dir=tmp_path)
                except ConfigError as exc:
                    pytest.fail(f"docs/config.md '{heading}' key {key!r} = {row['example']} is refused: {exc}")


def _keys_read(data: dict[str, Any], tmp: Path, monkeypatch: pytest.MonkeyPatch) -> set[tuple[str, str]]:
    """(table, key) of every key the loader reads while loading `data`."""
    seen: set[tuple[str, str]] = set()
    real_get = config_mod._Reader.get

    def get(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        path = re.sub(r"\[\d+\]", "", self.path)
        seen.add(("judge" if path == "judges" else path, key))  # each [[judges]] entry is a [judge] table
        return real_get(self, key, *args, **kwargs)

    monkeypatch.setattr(config_mod._Reader, "get", get)
    config_from_dict(data, source="docs", base_dir=tmp)
    return seen


def test_every_key_the_loader_reads_is_documented(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ref = _reference("Reference")
    documented = {(RUN_SECTIONS[h], k) for h, rows in ref.items() for k in rows}
    base = _base(tmp_path)
    # a config that reaches every branch of the loader: all tables present, an imported model too
    data = copy.deepcopy(base)
    data.update(run={}, arena={}, rating={})
    data["models"].append({"name": "imported", "evalscope_report": "reports/m"})
    data["models"][1].update(mode="batch", batch={})  # an endpoint in batch mode reads its batch table
    read = _keys_read(data, tmp_path, monkeypatch)
    panel = _panel_base(base)  # and a panel with every [panel] key
    panel["panel"] = {"cascade": ["judge", "judge2"], "calibration": 0.1, "human_labels": "labels.jsonl"}
    read |= _keys_read(panel, tmp_path, monkeypatch)
    for stop in ({"rule": "decided", "margin": 0.01, "confidence": 0.9, "min_queries": 10, "block": 10},
                 {"halfwidth": 0.03}):  # both forms of the adaptive-judging table
        read |= _keys_read({**copy.deepcopy(base), "arena": {"stop": stop}}, tmp_path, monkeypatch)
    assert ("arena.stop", "margin") in read and ("arena.stop", "halfwidth") in read
    assert ("models", "concurrency") in read and ("judge", "template") in read  # the recorder works
    assert ("panel", "human_labels") in read
    read = {("endpoint.batch", k) if t in {f"{e}.batch" for e in ENDPOINT_TABLES} else (t, k) for t, k in read}
    undocumented = sorted(
        f"{t or 'top level'}.{k}" for t, k in read
        if (t, k) not in documented and not (t in ENDPOINT_TABLES and ("endpoint", k) in documented)
    )
    assert not undocumented, f"keys the loader reads but docs/config.md does not document: {undocumented}"


def test_unknown_key_suggests_the_nearest(tmp_path: Path) -> None:
    data = _base(tmp_path)
    data["models"][1]["concurency"] = 4
    with pytest.raises(ConfigError, match=r"unknown key 'models\[1\]\.concurency' \(did you mean 'concurrency'\?\)"):
        config_from_dict(data, source="arena.toml")
    data = _base(tmp_path)
    data["rating"] = {"interval": "score", "zzz": 1}
    with pytest.raises(ConfigError, match=r"unknown key 'rating\.zzz'$"):  # nothing near: no guess
        config_from_dict(data, source="arena.toml")


def _field_default(f: Any) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


@pytest.mark.parametrize("heading", list(SIM_SECTIONS))
def test_simulator_reference_matches_its_dataclasses(heading: str) -> None:
    ref = _reference("Simulator reference")
    assert set(ref) == set(SIM_SECTIONS)
    cls = SIM_SECTIONS[heading]
    names = {f.name for f in fields(cls)}
    rows = ref[heading]
    assert set(rows) == names, f"{heading}: undocumented {sorted(names - set(rows))}, unknown {sorted(set(rows) - names)}"
    for f in fields(cls):
        default, cell = _field_default(f), rows[f.name]["default"]
        if isinstance(default, bool | int | float | str) and cell.startswith("`"):
            assert tomllib.loads("v = " + cell.strip("`"))["v"] == default, f"{heading}.{f.name}: default {cell}"


def test_every_documented_simulator_key_is_accepted() -> None:
    ref = _reference("Simulator reference")
    base: dict[str, Any] = {"models": [{"name": "m"}, {"name": "j", "judge": True}]}
    for heading, rows in ref.items():
        for key, row in rows.items():
            data = copy.deepcopy(base)
            value = _example(row)
            cls = SIM_SECTIONS[heading]
            if cls is SimConfig:
                data[key] = value
            elif cls is SimModel and key in SIM_JUDGE_KEYS:  # a judge's own habits: set on the judge
                data["models"][1].update({key: value, **SIM_JUDGE_KEYS[key]})
            elif cls is SimModel:
                data["models"][0][key] = value
                data["models"][0]["name"] = value if key == "name" else "m"
            elif cls is Latency:
                data["latency"] = {key: value}
            else:
                data["faults"] = {key: value}
            try:
                SimConfig.from_mapping(data, source="docs")
            except ConfigError as exc:
                pytest.fail(f"docs/config.md '{heading}' key {key!r} = {row['example']} is refused: {exc}")


def test_simulator_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['tie_rat'\] \(did you mean 'tie_rate'\?\)"):
        SimConfig.from_mapping({"models": [{"name": "m"}], "tie_rat": 0.1}, source="sim.toml")
