"""Judgments made by Arena-Hard-Auto and AlpacaEval, rated without a request.

The Arena-Hard fixture is written from its published format (model_judgment/<judge>/<model>.jsonl, as
in lmarena/arena-hard-auto v0.1); the expected scores come from Arena-Hard's own formula, written
out here as its show_result.py does it: each game one battle row (a strong verdict repeated WEIGHT = 3
times, game 1 with the baseline as model_a, game 2 with the labels read the other way round), ties
half a win each, a Bradley-Terry fit on the Elo scale (400, base 10) anchored at the baseline = 1000,
score = predicted win rate against the baseline x 100.
"""

from __future__ import annotations

import csv
import io
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from arena_engine.config import RatingConfig
from arena_engine.errors import DatasetError
from arena_engine.interop import alpacaeval_games, arena_hard_games, models_of
from arena_engine.leaderboard import leaderboards

BASELINE = "gpt-4-0314"
QUALITY = {"llama-3-70b": 0.6, "mistral-7b": -0.8, "qwen2-72b": 0.2}


def _write_fixture(root: Path, n_questions: int = 60) -> Path:
    rng = np.random.default_rng(7)
    folder = root / "model_judgment" / "gpt-4-1106-preview"
    folder.mkdir(parents=True)
    for model, q in QUALITY.items():
        rows = []
        for i in range(n_questions):
            games = []
            for model_is_a in (False, True):  # game 1: A = baseline; game 2: A = the model
                x = q + rng.logistic()  # the model's advantage
                label = "B>>A" if x > 2 else "B>A" if x > 0.4 else "A=B" if x > -0.4 else "A>B" if x > -2 else "A>>B"
                if model_is_a:  # the same advantage, the positions swapped
                    label = {"B>>A": "A>>B", "B>A": "A>B", "A=B": "A=B", "A>B": "B>A", "A>>B": "B>>A"}[label]
                games.append({"user_prompt": f"<|User Prompt|>\nquestion {i}", "judgment": f"... [[{label}]]",
                              "score": label if (i, model_is_a) != (5, True) else None})
            rows.append({"question_id": f"q{i:04d}", "model": model, "judge": "gpt-4-1106-preview", "games": games})
        (folder / f"{model}.jsonl").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return folder


def _arena_hard_formula(folder: Path, baseline: str = BASELINE) -> dict[str, float]:
    """Arena-Hard-Auto's show_result.py, in numpy: battles, then the MLE Elo, then the score."""
    battles = []  # (model_a, model_b, winner)
    for f in sorted(folder.glob("*.jsonl")):
        for line in f.read_bytes().splitlines():
            row = orjson.loads(line)
            for n, game in enumerate(row["games"]):
                s = game["score"]
                weight = 3 if s in ("A>>B", "B>>A") else 1 if s in ("A>B", "B>A", "A=B") else 0
                if s == "A=B":
                    winner = "tie"
                elif n == 0:
                    winner = "model_a" if s in ("A>B", "A>>B") else "model_b"
                else:
                    winner = "model_b" if s in ("A>B", "A>>B") else "model_a"
                battles += [(baseline, row["model"], winner)] * weight
    models = sorted({m for a, b, _ in battles for m in (a, b)})
    idx = {m: i for i, m in enumerate(models)}
    k = len(models)
    wins = np.zeros((k, k))  # wins[i, j]: i beat j (a tie half each)
    for a, b, w in battles:
        i, j = idx[a], idx[b]
        if w == "model_a":
            wins[i, j] += 1
        elif w == "model_b":
            wins[j, i] += 1
        else:
            wins[i, j] += 0.5
            wins[j, i] += 0.5
    theta = np.zeros(k)  # natural-log strengths; Newton on the BT log-likelihood, baseline fixed at 0
    base = idx[baseline]
    free = [i for i in range(k) if i != base]
    n = wins + wins.T
    for _ in range(100):
        p = 1 / (1 + np.exp(-(theta[:, None] - theta[None, :])))
        grad = (wins - n * p).sum(axis=1)
        w = n * p * (1 - p)
        hess = w - np.diag(w.sum(axis=1))  # of the log-likelihood: negative definite on the free strengths
        step = np.linalg.solve(hess[np.ix_(free, free)], grad[free])
        theta[free] -= step
        if np.abs(step).max() < 1e-12:
            break
    elo = 1000 + 400 / math.log(10) * theta
    return {m: 100 / (1 + 10 ** ((elo[base] - elo[idx[m]]) / 400)) for m in models}


def test_imported_arena_hard_judgments_give_arena_hards_scores(tmp_path: Path) -> None:
    folder = _write_fixture(tmp_path)
    games = arena_hard_games(folder, baseline=BASELINE)
    assert len(games) == 3 * 60 * 2 and sum(g.outcome is None for g in games) == 3  # one game without a verdict each
    boards = leaderboards(games, models_of(games, BASELINE), BASELINE, RatingConfig(), seed=0)
    ours = {e.model: 100 * e.winrate for e in boards[0].entries}
    theirs = _arena_hard_formula(folder)
    assert set(ours) == set(theirs) == {BASELINE, *QUALITY}
    for m in QUALITY:
        assert ours[m] == pytest.approx(theirs[m], abs=1e-6), m
    assert ours["llama-3-70b"] > ours["qwen2-72b"] > 50 > ours["mistral-7b"]


def test_cli_rates_them_without_a_request(tmp_path: Path) -> None:
    folder = _write_fixture(tmp_path)
    out = subprocess.run([sys.executable, "-m", "arena_engine.cli", "import-judgments", str(folder), "--from",
                          "arena-hard", "--format", "json"], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode in (0, 1), out.stderr
    rows = {r["model"]: r for r in orjson.loads(out.stdout)["rows"] if r["scope"] == "OVERALL"}
    theirs = _arena_hard_formula(folder)
    assert 100 * rows["llama-3-70b"]["winrate"] == pytest.approx(theirs["llama-3-70b"], abs=1e-6)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": "q1", "model": "m", "games": [{"score": "A>C"}, {"score": "A>B"}]}\n')
    err = subprocess.run([sys.executable, "-m", "arena_engine.cli", "import-judgments", str(bad), "--from", "arena-hard"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert err.returncode == 2 and "bad.jsonl:1: games[0].score" in err.stderr


def test_alpacaeval_annotations(tmp_path: Path) -> None:
    rows = []
    for i in range(40):
        for model, p in (("good", 2.0 if i % 4 else 1.5), ("bad", 1.0 if i % 5 else 2.0)):
            rows.append({"instruction": f"Instruction {i}", "output_1": "ref", "generator_1": "gpt4_turbo",
                         "output_2": f"{model} {i}", "generator_2": model, "preference": p})
    rows.append({"instruction": "x", "output_1": "a", "generator_1": "gpt4_turbo", "output_2": "b",
                 "generator_2": "good", "preference": None})
    path = tmp_path / "annotations.json"
    path.write_bytes(orjson.dumps(rows))
    games = alpacaeval_games(path)
    good = [g for g in games if g.candidate == "good" and g.outcome is not None]
    assert len(good) == 40 and sum(g.outcome == 1 for g in good) == 30 and sum(g.outcome == 0 for g in good) == 10
    assert all(g.opponent == "gpt4_turbo" and not g.candidate_is_a for g in games)
    assert len({g.query_id for g in games if g.candidate == "good"}) == 41  # one query per instruction text
    boards = leaderboards(games, models_of(games, "gpt4_turbo"), "gpt4_turbo", RatingConfig(), seed=0)
    by = {e.model: e.winrate for e in boards[0].entries}
    assert by["good"] == pytest.approx((30 + 5) / 40) and by["bad"] == pytest.approx(8 / 40)
    path.write_bytes(orjson.dumps([{"instruction": "x", "generator_1": "a", "generator_2": "b", "preference": 3}]))
    with pytest.raises(DatasetError, match=r"\[0\]\.preference"):
        alpacaeval_games(path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "arena_engine.cli", *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_export_round_trips_through_arena_hards_format(tmp_path: Path) -> None:
    assert _cli("demo", "--output", str(tmp_path / "demo"), "--queries", "8", "--quiet").returncode in (0, 1)
    run = tmp_path / "demo" / "run"
    ours = {r["model"]: r for r in orjson.loads(_cli("rate", str(run), "--format", "json").stdout)["rows"]
            if r["scope"] == "OVERALL"}
    # Arena-Hard's format, read back by the importer: the same games, so the same OVERALL numbers
    out = _cli("export", str(run), "--format", "arena-hard", "--output", str(tmp_path / "ah"))
    assert out.returncode == 0, out.stderr
    folder = tmp_path / "ah" / "model_judgment" / "sim-judge"
    assert sorted(p.name for p in folder.glob("*.jsonl")) == ["sim-strong.jsonl", "sim-weak.jsonl"]
    row = orjson.loads((folder / "sim-strong.jsonl").read_bytes().splitlines()[0])
    assert set(row) == {"question_id", "model", "judge", "games"} and len(row["games"]) == 2
    back = _cli("import-judgments", str(folder), "--from", "arena-hard", "--baseline", "sim-base", "--format", "json")
    theirs = {r["model"]: r for r in orjson.loads(back.stdout)["rows"] if r["scope"] == "OVERALL"}
    for m in ("sim-strong", "sim-weak"):
        assert theirs[m]["winrate"] == pytest.approx(ours[m]["winrate"], abs=1e-12)
        assert theirs[m]["games"] == ours[m]["games"]
    assert _arena_hard_formula(folder, "sim-base")["sim-strong"] == pytest.approx(100 * ours["sim-strong"]["winrate"], abs=1e-6)
    # the flat CSV: one row per game, as many as report.json counts
    assert _cli("export", str(run), "--output", str(tmp_path / "games.csv")).returncode == 0
    games = list(csv.DictReader(io.StringIO((tmp_path / "games.csv").read_text(encoding="utf-8"))))
    report = orjson.loads((run / "report" / "report.json").read_bytes())
    assert len(games) == sum(s["games"] for s in report["subsets"])
    assert {g["candidate_is_a"] for g in games} == {"0", "1"} and all(g["opponent"] == "sim-base" for g in games)

