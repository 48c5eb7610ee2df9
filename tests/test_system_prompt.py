"""Per-model system prompts: combined with a query's own `system` by the documented rule, sent, and part
of each answer's identity (a changed prompt is asked again, an unchanged one reused)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from shape_server import completion, shape_server

from arena_engine import Arena, ConfigError, config_from_dict
from arena_engine.datasets import iter_queries
from arena_engine.identity import model_messages


def _data(tmp: Path) -> Path:
    d = tmp / "data" / "qa"
    d.mkdir(parents=True)
    rows = [{"query": "What is 2+2?"}, {"query": "Name a colour.", "system": "You are a painter."},
            {"messages": [{"role": "system", "content": "Speak French."}, {"role": "user", "content": "Hi"}]}]
    (d / "s.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return d


def _config(tmp: Path, url: str, **cand: Any) -> dict[str, Any]:
    return {
        "run": {"output_dir": str(tmp / "run")},
        "datasets": [{"path": str(_data(tmp)) if not (tmp / "data").exists() else str(tmp / "data" / "qa")}],
        "models": [{"name": "base", "model": "m", "api_url": url, "identity": "base"},
                   {"name": "cand", "model": "m", "api_url": url, "identity": "cand", **cand}],
        "judge": {"name": "judge", "api_url": url, "identity": "judge"},
    }


@pytest.mark.parametrize(("combine", "expected"), [
    ("prepend", [None, "Be brief.\n\nYou are a painter.", "Be brief.\n\nSpeak French."]),
    ("replace", [None, "Be brief.", "Be brief."]),
    ("fallback", [None, "You are a painter.", "Speak French."]),
])
def test_the_rule_that_combines_the_two_prompts(tmp_path: Path, combine: str, expected: list[str | None]) -> None:
    cfg = config_from_dict(_config(tmp_path, "http://127.0.0.1:1/v1", system_prompt="Be brief.",
                                   system_prompt_combine=combine))
    queries = list(iter_queries(cfg.datasets[0].path, dataset="qa"))
    cand, base = cfg.model("cand"), cfg.model("base")
    for q, own in zip(queries, expected, strict=True):
        msgs = model_messages(cand, q)
        assert msgs[0]["role"] == "system" and msgs[-1]["role"] == "user"
        assert sum(m["role"] == "system" for m in msgs) == 1
        assert msgs[0]["content"] == (own if own is not None else "Be brief.")
        assert model_messages(base, q) == [dict(m) for m in q.messages]  # no prompt: as the dataset says


def test_prompt_file_and_errors(tmp_path: Path) -> None:
    (tmp_path / "terse.txt").write_text("Five words at most.", encoding="utf-8")
    cfg = config_from_dict(_config(tmp_path, "http://x/v1", system_prompt_file="terse.txt"), base_dir=tmp_path)
    assert cfg.model("cand").system_prompt == "Five words at most."
    for bad, match in (({"system_prompt": "a", "system_prompt_file": "terse.txt"}, "set only one"),
                       ({"system_prompt": "  "}, "is empty"),
                       ({"system_prompt": "a", "system_prompt_combine": "merge"}, "must be one of")):
        with pytest.raises(ConfigError, match=match):
            config_from_dict(_config(tmp_path, "http://x/v1", **bad), base_dir=tmp_path)
    data = _config(tmp_path, "http://x/v1", system_prompt="a", reuse_answers_of="base")
    data["models"][1].pop("identity")
    with pytest.raises(ConfigError, match="same system_prompt"):
        config_from_dict(data, base_dir=tmp_path)


def _answer(body: dict[str, Any]) -> dict[str, Any]:
    if body["model"] == "judge":
        return completion("The first is better. [[A>B]]")
    system = next((m["content"] for m in body["messages"] if m["role"] == "system"), "")
    return completion(f"answer under <{system}>")


def test_the_prompt_is_sent_and_part_of_the_answers_identity(tmp_path: Path) -> None:
    async def run(**cand: Any) -> tuple[dict[str, int], list[dict[str, Any]]]:
        async with shape_server(_answer) as server, \
                Arena(config_from_dict(_config(tmp_path, server.url, **cand))) as arena:
            await arena.run()
            reused = {name: s.reused for name, s in arena.stages.items()}
        return reused, [b for b in server.bodies() if b["model"] == "m"]

    _, first = asyncio.run(run(system_prompt="Be brief."))
    sent = sorted(tuple(m["content"] for m in b["messages"] if m["role"] == "system") for b in first)
    # 3 queries for base (no prompt of its own: the dataset's system messages only) and 3 for cand
    assert sent == sorted([(), ("You are a painter.",), ("Speak French.",),
                           ("Be brief.",), ("Be brief.\n\nYou are a painter.",), ("Be brief.\n\nSpeak French.",)])
    reused, again = asyncio.run(run(system_prompt="Be brief."))
    assert again == [] and reused["cand"] == 3  # same prompt: nothing asked again
    reused, changed = asyncio.run(run(system_prompt="Be careful."))
    assert reused["cand"] == 0 and reused["base"] == 3
    assert len(changed) == 3 and all(b["messages"][0]["content"].startswith("Be careful.") for b in changed)
