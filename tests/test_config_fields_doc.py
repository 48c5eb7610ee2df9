"""docs/config.md against the config values' fields: every key the loader accepts is documented with
its default, and nothing is documented that is not a key (`config_fields.reference`).

tests/test_config_reference.py checks the same page from the other side: that every documented
example loads, and that no key the loader reads is missing from it."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import MISSING
from typing import Any

import pytest

from arena_engine.batch_options import BatchOptions
from arena_engine.config import DatasetConfig, JudgeConfig, ModelConfig, RatingConfig, RunConfig
from arena_engine.config_fields import DERIVED, config_fields, reference
from arena_engine.endpoint_config import Endpoint
from arena_engine.panel import PanelConfig
from arena_engine.stop_rules import StopConfig
from tests.test_config_reference import _reference

ENDPOINT = "Endpoint keys (each `[[models]]`, `[judge]` and `[[judges]]`)"
# reference heading -> (the dataclass of the table, the sub-table of it the heading documents)
SECTIONS: dict[str, tuple[type, str]] = {
    "Top level": (RunConfig, ""),
    "`[run]`": (RunConfig, "run"),
    "`[arena]`": (RunConfig, "arena"),
    "`[[datasets]]`": (DatasetConfig, ""),
    "`[[models]]`": (ModelConfig, ""),
    "`[judge]`": (JudgeConfig, ""),
    "`[panel]`": (PanelConfig, ""),
    ENDPOINT: (Endpoint, ""),
    "Endpoint `batch` table (with `mode = \"batch\"`)": (BatchOptions, ""),
    "`[arena.stop]`": (StopConfig, ""),
    "`[rating]`": (RatingConfig, ""),
}
# a table whose default is also written as a short form (`stop = "never"`): the field it stands for
SHORT_FORM = {StopConfig: "rule"}


def _keys(heading: str) -> dict[str, Any]:
    """{key: default} the fields say the section's table takes (a model's and a judge's endpoint keys
    are documented once, in their own section)."""
    cls, table = SECTIONS[heading]
    keys = reference(cls)[table]
    if cls in (ModelConfig, JudgeConfig):
        keys = {k: v for k, v in keys.items() if k not in reference(Endpoint)[""]}
    return keys


def _literal(cell: str) -> Any:
    """The TOML value in the cell's first backticks (`` `199229440` (190 MB) `` -> 199229440)."""
    match = re.match(r"`([^`]*)`", cell)
    assert match, cell
    return tomllib.loads("v = " + match.group(1))["v"]


def _json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def test_every_section_is_mapped_to_its_fields() -> None:
    assert set(_reference("Reference")) == set(SECTIONS)


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_the_reference_lists_exactly_the_keys_of_the_fields(heading: str) -> None:
    documented, keys = set(_reference("Reference")[heading]), set(_keys(heading))
    assert documented == keys, (f"{heading}: keys docs/config.md lacks {sorted(keys - documented)}, "
                                f"documented keys that are not one {sorted(documented - keys)}")


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_the_reference_gives_each_key_the_default_of_its_field(heading: str) -> None:
    rows = _reference("Reference")[heading]
    for name, default in _keys(heading).items():
        cell = rows[name]["default"]
        where = f"{heading} `{name}`: default {cell!r}, the field's {default!r}"
        assert cell.startswith("*required*") == (default is MISSING), where
        if default is MISSING or default is DERIVED or default is None:
            continue  # a derived default and "none" are said in words (`identity`: "<name> @ <api_url>")
        if dataclasses.is_dataclass(default):  # a table: every key at its default
            short = SHORT_FORM.get(type(default))
            assert _literal(cell) in ({}, getattr(default, short) if short else {}), where
        elif cell.startswith("`"):
            assert _literal(cell) == _json(default), where
        else:  # an empty table or list may be said in words ("none")
            assert default in ((), {}), where


@pytest.mark.parametrize("heading", list(SECTIONS))
def test_the_reference_names_every_choice_of_a_choice_key(heading: str) -> None:
    cls, table = SECTIONS[heading]
    rows = _reference("Reference")[heading]
    for _, k in config_fields(cls):
        if k.check == "choice" and k.table == table and k.name in rows:
            missing = [c for c in k.choices if f'"{c}"' not in rows[k.name]["range"]]
            assert not missing, f"{heading} `{k.name}`: the range column lacks {missing}"
