"""Ratings on public data with published numbers (vendored under tests/data/, licences beside them)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import lzma
import math
import re
from pathlib import Path

import numpy as np
import pytest

from arena_engine.rating import rate_battles, winrate_from_rating

DATA = Path(__file__).resolve().parent / "data"
BASELINE = "Phi-3-medium-128k-instruct"
# the SHA-256 of each uncompressed file, as listed in tests/data/README.md
SHA256 = {
    "arena-hard-local/arena_hard_battles.jsonl": "0c983d524b4a0cbe6fd31e42fd312446abd629031a3621c2221ee2fad932a6ae",
    "arena-hard-local/bootstrapping_results.jsonl": "daaa551ac2b4964a69211fbeaf9cc9649b7611e7a44d505a58d17f9c94346e97",
    "llmfao/llmfao.csv": "106564a4bf06f047a4662979384313c22d9b4ca901e780f9e8419f8e5581adb1",
    "llmfao/llmfao-golden.csv": "e860654541c6e8aac859ba513f7f3458e1ac9f326a2f6895960688bb2d171145",
}


def _read(name: str) -> str:
    """A vendored file's text (stored xz-compressed)."""
    return lzma.decompress((DATA / f"{name}.xz").read_bytes()).decode("utf-8")


def test_vendored_data_is_the_published_data_with_its_licences():
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name, digest in SHA256.items():
        assert hashlib.sha256(_read(name).encode("utf-8")).hexdigest() == digest, name
        assert digest in readme, name
    assert "Apache License" in (DATA / "arena-hard-local" / "LICENSE").read_text(encoding="utf-8")
    assert "CC BY 4.0" in (DATA / "llmfao" / "LICENSE_DATA.md").read_text(encoding="utf-8")
    assert "Apache License" in (DATA / "llmfao" / "LICENSE_evalica_repo").read_text(encoding="utf-8")


def _published_table() -> dict[str, tuple[float, float, float]]:
    """The 'Llama-3-70B-Instruct-AH-AWQ as judge' block: model -> (score, ci minus, ci plus)."""
    text = (DATA / "arena-hard-local" / "README_7c9799e_20240603.md").read_text(encoding="utf-8")
    block = text.split("Llama-3-70B-Instruct-AH-AWQ as judge", 1)[1].split("```", 2)[1]
    rows = re.findall(r"^(\S+)\s+\| score:\s+([\d.]+)\s+\| 95% CI:\s+\(([-\d.]+), ([-\d.]+)\)", block, re.M)
    return {name: (float(s), float(lo), float(hi)) for name, s, lo, hi in rows}


def _arena_hard() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lines = _read("arena-hard-local/arena_hard_battles.jsonl").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    models = sorted({r["model_a"] for r in rows} | {r["model_b"] for r in rows})
    index = {m: i for i, m in enumerate(models)}
    queries: dict[str, int] = {}
    a = np.array([index[r["model_a"]] for r in rows])
    b = np.array([index[r["model_b"]] for r in rows])
    o = np.array([{"model_a": 1, "model_b": -1, "tie": 0}[r["winner"]] for r in rows], dtype=np.int8)
    q = np.array([queries.setdefault(r["question_id"], len(queries)) for r in rows])
    return models, a, b, o, q


def test_arena_hard_local_table_is_reproduced():
    published = _published_table()
    assert len(published) == 9 and published[BASELINE][0] == 50.0
    models, a, b, o, q = _arena_hard()
    # strong verdicts are already expanded into 3 rows, so strong_weight does not apply (no +-2 here)
    ours = rate_battles(a, b, o, q, models=models, baseline=BASELINE, rounds=1000, seed=0)
    rows_level = rate_battles(a, b, o, q, models=models, baseline=BASELINE, rounds=1000, seed=0, method="evalscope")
    print("\nmodel                                           published (row-level CI)  ours (question-level CI)")
    for m in sorted(published, key=lambda name: -published[name][0]):
        score, lo, hi = published[m]
        r = ours[m]
        print(
            f"{m:47s} {score:5.1f} ({lo:+.1f}, {hi:+.1f})         {100 * r.winrate:5.1f} "
            f"({100 * (r.winrate_lower - r.winrate):+.1f}, {100 * (r.winrate_upper - r.winrate):+.1f})"
        )
        assert round(100 * r.winrate, 1) == pytest.approx(score, abs=1e-9), m
    # question-level intervals are wider than the published row-level ones; our row-level mode is not
    width = {name: published[name][2] - published[name][1] for name in published if name != BASELINE}
    ours_width = {n: 100 * (ours[n].winrate_upper - ours[n].winrate_lower) for n in width}
    rows_width = {n: 100 * (rows_level[n].winrate_upper - rows_level[n].winrate_lower) for n in width}
    assert np.mean(list(ours_width.values())) > 1.4 * np.mean(list(width.values()))
    assert np.mean(list(rows_width.values())) == pytest.approx(np.mean(list(width.values())), rel=0.2)
    assert ours[BASELINE].n_battles == 21016 - 1134  # its rows against itself carry no information


def test_arena_hard_local_published_intervals_follow_from_the_stored_rounds():
    """The CI convention we use (percentiles of bootstrap ratings, mapped to win rates) is theirs."""
    published = _published_table()
    lines = _read("arena-hard-local/bootstrapping_results.jsonl").splitlines()
    rounds = [json.loads(line) for line in lines if line.strip()]
    models, a, b, o, q = _arena_hard()
    point = rate_battles(a, b, o, q, models=models, baseline=BASELINE, rounds=0)
    for m, (_, lo, hi) in published.items():
        if m == BASELINE:
            continue
        elos = np.array([r[m] for r in rounds])
        lower = 100 * winrate_from_rating(float(np.percentile(elos, 2.5)))
        upper = 100 * winrate_from_rating(float(np.percentile(elos, 97.5)))
        score = 100 * point[m].winrate
        assert round(lower - score, 1) == pytest.approx(lo, abs=0.1 + 1e-9), m
        assert round(upper - score, 1) == pytest.approx(hi, abs=0.1 + 1e-9), m


def test_llmfao_bradley_terry_matches_evalica_golden():
    rows = list(csv.DictReader(io.StringIO(_read("llmfao/llmfao.csv"), newline="")))
    golden = {r["item"]: float(r["score"])
              for r in csv.DictReader(io.StringIO(_read("llmfao/llmfao-golden.csv"), newline=""))
              if r["algorithm"] == "bradley_terry"}
    models = sorted({r["left"] for r in rows} | {r["right"] for r in rows})
    assert set(models) == set(golden) and len(models) == 59
    index = {m: i for i, m in enumerate(models)}
    a = np.array([index[r["left"]] for r in rows])
    b = np.array([index[r["right"]] for r in rows])
    o = np.array([{"left": 1, "right": -1, "tie": 0}[r["winner"]] for r in rows], dtype=np.int8)
    q = np.array([int(r["prompt"]) for r in rows])
    assert int(np.sum(o == 0)) == 3471
    r = rate_battles(a, b, o, q, models=models, baseline=models[0], rounds=0)
    strength = np.array([10 ** ((m.rating - 1000) / 400) for m in r.per_model])
    strength /= strength.sum()  # evalica normalises scores to sum to 1
    expected = np.array([golden[m] for m in models])
    assert [models[i] for i in np.argsort(-strength)] == sorted(models, key=lambda m: -golden[m])
    np.testing.assert_allclose(strength, expected, rtol=0, atol=1e-6)
    assert max(abs(math.log(s / e)) for s, e in zip(strength, expected, strict=True)) < 1e-6
    assert all(m.flags == () for m in r.per_model)
