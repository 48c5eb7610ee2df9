"""Judge panels against known truth (issue 24): whole `arena-engine run`s against the simulator, whose
judges have their own noise, position bias and self-preference, and the truth they imply.

Used by tests/test_judge_panels.py (a few hundred queries) and benchmarks/bench_panel.py (2,000).

- panel: judges with noise 0.5 / 1.0 / 2.0, plus one (noise 1.0) with self-preference 0.5 toward
  `cand-a` whose config says it is related to `cand-a`; and the noise-0.5 judge related to `cand-b`
  without any preference (a control that must not be flagged). The human-labels file holds the truth
  labels (the answer of higher latent strength wins) of every battle, so each judge's measured
  agreement is compared with the simulator's exact probability (`Judge.battle_probabilities`).
  A rerun on the same folder with a 500-label file sends nothing and prints that agreement.
- cascade: cheap (noise 1.5) -> strong (noise 0.5), then a strong-judge-only run on the same folder
  (which reuses the strong judge's verdicts the cascade paid for and asks for the rest).
"""

from __future__ import annotations

import contextlib
import io
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from arena_engine.cli import main as cli_main
from arena_engine.config import config_from_dict
from arena_engine.datasets import iter_queries
from arena_engine.demo import write_demo_dataset
from arena_engine.identity import model_messages
from arena_engine.sim.answers import query_hash
from arena_engine.sim.config import Latency, SimConfig, SimModel
from arena_engine.sim.judging import Judge
from arena_engine.sim.process import SimProcess

BASE, CAND_A, CAND_B = "base", "cand-a", "cand-b"
NOISES = {"j-low": 0.5, "j-mid": 1.0, "j-high": 2.0}
SELF_JUDGE, SELF_PREFERENCE = "j-self", 0.5
CHEAP, STRONG = "cheap", "strong"
#: how much an answer's quality varies from query to query (the simulator's default is 0.5): with the
#: default, the per-request logistic noise every simulated judge has swamps the quality gap, judges agree
#: with each other barely above chance (kappa ~0.05) and their noises cannot be told apart
ANSWER_NOISE = 1.5


def sim_config(seed: int = 0) -> SimConfig:
    models = [SimModel(BASE, 0.0), SimModel(CAND_A, 0.5), SimModel(CAND_B, -0.3)]
    models += [SimModel(name, judge=True, judge_noise=noise) for name, noise in NOISES.items()]
    models.append(SimModel(SELF_JUDGE, judge=True, judge_noise=1.0, self_preference=SELF_PREFERENCE, prefers=CAND_A))
    models += [SimModel(CHEAP, judge=True, judge_noise=1.5), SimModel(STRONG, judge=True, judge_noise=0.5)]
    return SimConfig(models=tuple(models), seed=seed, latency=Latency("fixed", 0.0), answer_noise=ANSWER_NOISE)


def _judge(name: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "api_url": url, "identity": name, "concurrency": 64, "max_attempts": 8, **extra}


def run_config(url: str, run_dir: Path, data: Path, judges: list[dict[str, Any]] | None = None,
               panel: dict[str, Any] | None = None, judge: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "run": {"output_dir": str(run_dir), "seed": 1},
        "datasets": [{"name": "qa", "path": str(data)}],
        "models": [{"name": m, "api_url": url, "identity": m, "concurrency": 64, "max_attempts": 8,
                    "generation": {"temperature": 0.0, "max_tokens": 256}} for m in (BASE, CAND_A, CAND_B)],
        "arena": {"baseline": BASE},
        "rating": {"rounds": 200},
    }
    if judges is not None:
        out["judges"] = judges
    if judge is not None:
        out["judge"] = judge
    if panel is not None:
        out["panel"] = panel
    return out


@dataclass(frozen=True)
class BattleRef:
    dataset: str
    subset: str
    query_id: str
    candidate: str
    qhex: str


def battles(config: dict[str, Any]) -> Iterator[BattleRef]:
    """Every battle of a config (baseline mode), with the simulator's query hash of its question."""
    cfg = config_from_dict({k: v for k, v in config.items() if k != "panel"}, source="<study>")
    base = cfg.model(BASE)
    for d in cfg.datasets:
        for q in iter_queries(d.path, dataset=d.name, subsets=d.subsets):
            qhex = query_hash(model_messages(base, q))
            for cand in (CAND_A, CAND_B):
                yield BattleRef(q.dataset, q.subset, q.id, cand, qhex)


def write_truth_labels(path: Path, refs: list[BattleRef], judge: Judge) -> None:
    lines = []
    for b in refs:
        t = judge.true_winner(b.candidate, BASE, b.qhex)
        winner = b.candidate if t > 0 else BASE if t < 0 else "tie"
        lines.append(orjson.dumps({"query_id": b.query_id, "model_a": b.candidate, "model_b": BASE, "winner": winner,
                                   "dataset": b.dataset, "subset": b.subset}))
    path.write_bytes(b"\n".join(lines) + b"\n")


def expected_agreement(refs: list[BattleRef], judge: Judge, model: SimModel) -> float:
    """The simulator's probability that `model`'s battle verdict (both orders) is the truth label."""
    total = 0.0
    for b in refs:
        probs = judge.battle_probabilities(b.candidate, BASE, b.qhex, model)
        total += probs[judge.true_winner(b.candidate, BASE, b.qhex)]
    return total / len(refs)


def arena(args: list[str]) -> tuple[int, str]:
    """`arena-engine ARGS` in this process; (exit code, what it printed on stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(args)
    return code, err.getvalue()


def _run(config: dict[str, Any], path: Path) -> tuple[int, str, dict[str, Any]]:
    path.write_bytes(orjson.dumps(config))
    code, err = arena(["run", str(path), "--quiet"])
    report = orjson.loads((Path(config["run"]["output_dir"]) / "report" / "report.json").read_bytes())
    return code, err, report


@dataclass
class PanelFigures:
    report: dict[str, Any]
    stderr: str
    kappas: dict[tuple[str, str], tuple[float, float]]  # (judge, judge) -> (5 labels, win/tie/loss)
    agreement: dict[str, tuple[float, float, int]]  # judge -> (measured, simulator's, labelled battles)
    human500: dict[str, Any]  # the 500-label rerun: report.json's human agreement
    human500_stderr: str
    rerun_requests: int  # requests the 500-label rerun sent (nothing: it reuses every record)
    self_preference: dict[str, dict[str, Any]]  # judge -> its self-preference entry


def panel_study(work: Path, queries: int, seed: int = 0) -> PanelFigures:
    work.mkdir(parents=True, exist_ok=True)
    sim = sim_config(seed)
    truth = Judge(sim)
    data = write_demo_dataset(work / "data", queries // 2)  # two subsets of queries/2 each
    with SimProcess(sim) as proc:
        judges = [_judge(n, proc.url) for n in NOISES]
        judges[0]["related_to"] = [CAND_B]  # a control: no preference, must not be flagged
        judges.append(_judge(SELF_JUDGE, proc.url, related_to=[CAND_A]))
        labels = work / "truth.jsonl"
        config = run_config(proc.url, work / "run", data, judges, {"combine": "mean", "human_labels": str(labels)})
        refs = list(battles(config))
        write_truth_labels(labels, refs, truth)
        _, err, report = _run(config, work / "panel.json")
        picked = random.Random(seed).sample(refs, min(500, len(refs)))
        few = work / "truth500.jsonl"
        write_truth_labels(few, picked, truth)
        config["panel"]["human_labels"] = str(few)
        _, err500, report500 = _run(config, work / "panel500.json")
    quality = report["panel"]["quality"]
    kappas = {(a["judge_a"], a["judge_b"]): (a["kappa_labels"]["value"], a["kappa_win_tie_loss"]["value"])
              for a in quality["agreement"]}
    by_name = {m.name: m for m in sim.models}
    agreement = {}
    for h in quality["human_agreement"]:
        j = h["judge"]
        agreement[j] = (h["agreement"]["value"], expected_agreement(refs, truth, by_name[j]), h["labelled_battles"])
    prefs = {s["judge"]: s["self_preference"][0] for s in quality["judges"] if s["self_preference"]}
    sent = sum(e["requests"] for e in report500["endpoints"].values())
    return PanelFigures(report, err, kappas, agreement, report500["panel"]["quality"]["human_agreement"], err500,
                        sent, prefs)


@dataclass
class CascadeFigures:
    report: dict[str, Any]
    stderr: str
    battles: int
    seen: dict[str, int]
    cascade_winrates: dict[str, float]
    strong_winrates: dict[str, float]


def _winrates(report: dict[str, Any]) -> dict[str, float]:
    return {e["model"]: e["winrate"] for e in report["leaderboards"][0]["entries"] if e["model"] != BASE}


def cascade_study(work: Path, queries: int, seed: int = 0, calibration: float = 0.0) -> CascadeFigures:
    work.mkdir(parents=True, exist_ok=True)
    sim = sim_config(seed)
    data = write_demo_dataset(work / "data", queries // 2)
    with SimProcess(sim) as proc:
        panel: dict[str, Any] = {"cascade": [CHEAP, STRONG]}
        if calibration:
            panel["calibration"] = calibration
        config = run_config(proc.url, work / "run", data, [_judge(CHEAP, proc.url), _judge(STRONG, proc.url)], panel)
        _, err, report = _run(config, work / "cascade.json")
        alone = run_config(proc.url, work / "run", data, judge=_judge(STRONG, proc.url))
        _, _, strong = _run(alone, work / "strong.json")
    p = report["panel"]
    return CascadeFigures(report, err, p["battles"], p["battles_seen"], _winrates(report), _winrates(strong))


def binomial_se(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("inf")
