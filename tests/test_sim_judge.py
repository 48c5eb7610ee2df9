"""The simulated judge: verdicts follow the latent qualities (Bradley-Terry with ties), deterministically."""

from __future__ import annotations

import asyncio
import math
import re
from collections import Counter
from typing import Any

import aiohttp
import orjson
import pytest

from arena_engine.sim import LABELS, Judge, SimConfig, SimModel, SimServer, label_probabilities, tie_margin
from arena_engine.sim.answers import make_tag

JSON_HEADERS = {"Content-Type": "application/json"}
BRACKET = re.compile(r"\[\[(A>>B|A>B|A=B|B>A|B>>A)\]\]")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def judge_prompt(question: str, answer_a: str, answer_b: str) -> str:
    return (
        "Please act as an impartial judge. Output your final verdict as [[A>>B]], [[A>B]], [[A=B]], [[B>A]] or "
        f"[[B>>A]].\n\n<|User Prompt|>\n{question}\n\n<|The Start of Assistant A's Answer|>\n{answer_a}\n"
        f"<|The End of Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_b}\n"
        "<|The End of Assistant B's Answer|>"
    )


def parse(content: str) -> str:
    if content.startswith("{"):
        verdict = orjson.loads(content)["verdict"]
        assert verdict in LABELS
        return str(verdict)
    labels = BRACKET.findall(content.rsplit("\n", 1)[-1])
    assert len(labels) == 1, content
    return str(labels[0])


async def chat(s: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> dict[str, Any]:
    async with s.post(url + "/chat/completions", data=orjson.dumps(body), headers=JSON_HEADERS) as r:
        assert r.status == 200
        data: dict[str, Any] = orjson.loads(await r.read())
        return data


def test_label_probabilities_are_a_distribution_with_tie_rate_at_equal_strength() -> None:
    for logit in (-3.0, -0.5, 0.0, 0.7, 4.0):
        p = label_probabilities(logit, 0.2, 2.0)
        assert list(p) == list(LABELS)
        assert all(v >= 0 for v in p.values()) and math.isclose(sum(p.values()), 1.0)
    p0 = label_probabilities(0.0, 0.2, 2.0)
    assert math.isclose(p0["A=B"], 0.2)
    assert math.isclose(p0["A>B"], p0["B>A"]) and math.isclose(p0["A>>B"], p0["B>>A"])
    assert math.isclose(tie_margin(0.0), 0.0)
    # a bigger gap means more strong verdicts
    assert label_probabilities(3.0, 0.2, 2.0)["A>>B"] > label_probabilities(1.0, 0.2, 2.0)["A>>B"]


def test_verdict_frequencies_match_the_model_exactly_without_noise() -> None:
    cfg = SimConfig(
        models=(SimModel("x", quality=0.8), SimModel("y", quality=-0.2), SimModel("j", judge=True)),
        judge_noise=0.0,
        answer_noise=0.0,
        difficulty_spread=0.0,
        position_bias=0.3,
        tie_rate=0.2,
        strong_margin=1.5,
        seed=4,
    )
    judge = Judge(cfg)
    prompt = judge_prompt("q?", make_tag("x", "0badf00d") + " yes", make_tag("y", "0badf00d") + " no")
    assert math.isclose(judge.logit(prompt), 0.8 - (-0.2) + 0.3)
    n = 20000
    counts = Counter(judge.verdict(prompt, key) for key in range(n))
    expected = label_probabilities(1.3, 0.2, 1.5)
    for label in LABELS:
        p = expected[label]
        sd = math.sqrt(n * p * (1 - p))
        assert abs(counts[label] - n * p) < 4.5 * sd, (label, counts, expected)


def test_missing_tags_count_as_quality_zero_and_unknown_models_too() -> None:
    cfg = SimConfig(
        models=(SimModel("x", quality=1.5), SimModel("j", judge=True)), answer_noise=0.0, position_bias=0.0
    )
    judge = Judge(cfg)
    tagged = make_tag("x", "00000001")
    assert judge.logit(judge_prompt("q", tagged, "plain answer")) > 0.5
    assert judge.logit(judge_prompt("q", "plain", "plain")) == 0.0
    assert (
        judge.logit(judge_prompt("q", make_tag("ghost", "00000001"), make_tag("ghost2", "00000001"))) == 0.0
    )


def test_per_query_difficulty_varies_the_gap_between_queries() -> None:
    cfg = SimConfig(models=(SimModel("x", quality=1.0), SimModel("y")), answer_noise=0.0, position_bias=0.0)
    judge = Judge(cfg)
    gaps = {
        judge.logit(judge_prompt("q", make_tag("x", f"{i:08x}"), make_tag("y", f"{i:08x}")))
        for i in range(50)
    }
    assert len(gaps) > 40
    assert min(gaps) >= 0.5 - 1e-9 and max(gaps) <= 1.5 + 1e-9


@pytest.mark.anyio
async def test_http_judge_ranks_the_demo_models_by_quality_in_both_orders() -> None:
    """The whole demo loop on the wire: answers from three models, two-order judging, win rates in order."""
    cfg = SimConfig.demo()
    queries = [f"Question number {i}: how do tides work near estuary {i % 7}?" for i in range(120)]
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:

        async def answer(model: str, q: str) -> str:
            data = await chat(s, sim.url, {"model": model, "messages": [{"role": "user", "content": q}]})
            return str(data["choices"][0]["message"]["content"])

        async def battle(cand: str, q: str) -> float:
            a, b = await asyncio.gather(answer(cand, q), answer("sim-base", q))
            v1, v2 = await asyncio.gather(
                chat(
                    s,
                    sim.url,
                    {"model": "sim-judge", "messages": [{"role": "user", "content": judge_prompt(q, a, b)}]},
                ),
                chat(
                    s,
                    sim.url,
                    {"model": "sim-judge", "messages": [{"role": "user", "content": judge_prompt(q, b, a)}]},
                ),
            )
            first, second = (
                parse(v1["choices"][0]["message"]["content"]),
                parse(v2["choices"][0]["message"]["content"]),
            )
            score = {"A>>B": 1.0, "A>B": 1.0, "A=B": 0.5, "B>A": 0.0, "B>>A": 0.0}
            return (score[first] + 1.0 - score[second]) / 2

        strong = await asyncio.gather(*(battle("sim-strong", q) for q in queries))
        weak = await asyncio.gather(*(battle("sim-weak", q) for q in queries))
        stats = sim.stats()
    win_strong, win_weak = sum(strong) / len(strong), sum(weak) / len(weak)
    assert win_strong > 0.65 and win_weak < 0.35, (win_strong, win_weak)
    assert stats["per_model"]["sim-judge"] == 4 * len(queries)


@pytest.mark.anyio
async def test_position_bias_favours_answer_a() -> None:
    cfg = SimConfig(models=(SimModel("x"), SimModel("j", judge=True)), position_bias=1.0, answer_noise=0.0)
    async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
        tag = make_tag("x", "12345678")
        results = await asyncio.gather(
            *(
                chat(
                    s,
                    sim.url,
                    {
                        "model": "j",
                        "messages": [{"role": "user", "content": judge_prompt(f"q{i}", tag, tag)}],
                    },
                )
                for i in range(300)
            )
        )
    counts = Counter(parse(r["choices"][0]["message"]["content"]) for r in results)
    a_wins = counts["A>>B"] + counts["A>B"]
    b_wins = counts["B>>A"] + counts["B>A"]
    assert a_wins > 1.8 * b_wins


@pytest.mark.anyio
async def test_verdict_is_deterministic_in_seed_and_body() -> None:
    prompt = judge_prompt(
        "q", make_tag("sim-strong", "00c0ffee") + " a", make_tag("sim-base", "00c0ffee") + " b"
    )

    async def verdicts(seed: int) -> list[str]:
        async with SimServer(SimConfig.demo(seed=seed)) as sim, aiohttp.ClientSession() as s:
            out = []
            for i in range(20):
                body = {
                    "model": "sim-judge",
                    "messages": [{"role": "user", "content": prompt}],
                    "temperature": i / 10,
                }
                out.append(parse((await chat(s, sim.url, body))["choices"][0]["message"]["content"]))
                again = parse((await chat(s, sim.url, body))["choices"][0]["message"]["content"])
                assert again == out[-1]
            return out

    a, b, c = await verdicts(1), await verdicts(1), await verdicts(2)
    assert a == b
    assert a != c


@pytest.mark.anyio
async def test_verdict_formats_json_bracket_mixed_and_response_format() -> None:
    prompt = judge_prompt("q", make_tag("sim-strong", "00c0ffee"), make_tag("sim-weak", "00c0ffee"))
    schema = {
        "type": "json_schema",
        "json_schema": {
            "name": "verdict",
            "schema": {"type": "object", "properties": {"verdict": {"enum": list(LABELS)}}},
        },
    }
    forms: dict[str, set[str]] = {}
    for fmt in ("json", "bracket", "mixed"):
        cfg = SimConfig(models=SimConfig.demo().models, verdict_format=fmt)
        async with SimServer(cfg) as sim, aiohttp.ClientSession() as s:
            seen = set()
            for i in range(40):
                msgs = [{"role": "system", "content": f"judge #{i}"}, {"role": "user", "content": prompt}]
                content = (await chat(s, sim.url, {"model": "sim-judge", "messages": msgs}))["choices"][0][
                    "message"
                ]["content"]
                parse(content)
                seen.add("json" if content.startswith("{") else "bracket")
            structured = await chat(
                s, sim.url, {"model": "sim-judge", "messages": msgs, "response_format": schema}
            )
            assert orjson.loads(structured["choices"][0]["message"]["content"])["verdict"] in LABELS
        forms[fmt] = seen
    assert forms == {"json": {"json"}, "bracket": {"bracket"}, "mixed": {"json", "bracket"}}


def test_label_probabilities_for_a_query_match_sampled_verdicts_with_all_noise_on() -> None:
    cfg = SimConfig.demo(seed=3)
    judge = Judge(cfg)
    n = 20000
    for qhex in ("0000abcd", "7f3e0011"):
        prompt = judge_prompt("q", make_tag("sim-strong", qhex), make_tag("sim-base", qhex))
        expected = judge.label_probabilities_for("sim-strong", "sim-base", qhex)
        assert math.isclose(sum(expected.values()), 1.0, rel_tol=1e-9)
        counts = Counter(judge.verdict(prompt, key) for key in range(n))
        for label in LABELS:
            p = expected[label]
            sd = math.sqrt(n * p * (1 - p))
            assert abs(counts[label] - n * p) < 4.5 * sd + 1, (qhex, label, counts, expected)
    # swapping the answers swaps the labels (up to the position bias, which favours A in both orders)
    fwd = judge.label_probabilities_for("sim-strong", "sim-weak", "0000abcd")
    back = judge.label_probabilities_for("sim-weak", "sim-strong", "0000abcd")
    assert fwd["A>>B"] + fwd["A>B"] > 0.6 and back["B>>A"] + back["B>A"] > 0.6


def test_prefer_a_rate_one_is_a_judge_that_always_prefers_position_a() -> None:
    cfg = SimConfig(models=(SimModel("x", quality=2.0), SimModel("y", quality=-2.0), SimModel("j", judge=True)),
                    prefer_a_rate=1.0)
    judge = Judge(cfg)
    good, bad = make_tag("x", "0000abcd") + " good", make_tag("y", "0000abcd") + " bad"
    # whichever answer stands first wins, however much better the other is
    assert {judge.verdict(judge_prompt("q", bad, good), k) for k in range(200)} == {"A>B"}
    assert {judge.verdict(judge_prompt("q", good, bad), k) for k in range(200)} == {"A>B"}
    assert judge.label_probabilities_for("y", "x", "0000abcd") == {"A>>B": 0.0, "A>B": 1.0, "A=B": 0.0,
                                                                     "B>A": 0.0, "B>>A": 0.0}


def test_prefer_a_rate_mixes_position_a_verdicts_into_the_honest_ones() -> None:
    models = (SimModel("x", quality=0.5), SimModel("y"), SimModel("j", judge=True))
    honest = Judge(SimConfig(models=models, judge_noise=0.0, answer_noise=0.0, seed=2))
    mixed = Judge(SimConfig(models=models, judge_noise=0.0, answer_noise=0.0, seed=2, prefer_a_rate=0.4))
    p0, p = honest.label_probabilities_for("y", "x", "00000001"), mixed.label_probabilities_for("y", "x", "00000001")
    for label in LABELS:
        assert p[label] == pytest.approx(0.6 * p0[label] + (0.4 if label == "A>B" else 0.0))
    prompt = judge_prompt("q", make_tag("y", "00000001"), make_tag("x", "00000001"))
    n = 20000
    counts = Counter(mixed.verdict(prompt, key) for key in range(n))
    for label in LABELS:
        sd = math.sqrt(n * p[label] * (1 - p[label]))
        assert abs(counts[label] - n * p[label]) < 4.5 * sd + 1, (label, counts, p)


@pytest.mark.parametrize("rate", [-0.1, 1.5, float("nan")])
def test_prefer_a_rate_must_be_a_probability(rate: float) -> None:
    from arena_engine.errors import ConfigError

    with pytest.raises(ConfigError, match="prefer_a_rate"):
        SimConfig(models=(SimModel("j", judge=True),), prefer_a_rate=rate)
    with pytest.raises(ConfigError, match=r"sim\.toml: prefer_a_rate"):
        SimConfig.from_mapping({"models": [{"name": "j", "judge": True}], "prefer_a_rate": rate}, source="sim.toml")
