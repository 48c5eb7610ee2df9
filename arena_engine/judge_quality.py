"""How far each judge of a run can be trusted: its own habits, its agreement with the other judges and
with human labels.

Per judge: position consistency (battles whose two orders agree), position bias (A's decisive wins minus
B's, over decisive games), tie rate (share of usable games called a tie) and self-preference (for a judge
whose config says which candidates it is related to: its mean battle score for such a candidate minus
the other judges' mean on the same battles; > 0 favours its own family). Between two judges: Cohen's
kappa on the five labels and on win/tie/loss, over the games both judged (same battle, same order).
Against human labels (``panel.human_labels``): the share of labelled battles whose verdict (win/tie/loss
from both orders, as the rating scores it) is the label's.

Every interval treats the query as the unit, as the ratings do: kappas by a bootstrap over queries
(seeded), shares and self-preference by the cluster-robust (ratio-estimator) standard error.
Pure functions of the games, no I/O but reading the labels file.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np
import orjson

from .battles import Game
from .errors import ConfigError
from .judge import sample_score
from .panel import BattleKey, battle_key

if TYPE_CHECKING:
    from .config import RunConfig

TIE = "tie"


@dataclass(frozen=True)
class Interval:
    value: float
    lower: float
    upper: float

    def text(self, digits: int = 3, percent: bool = False) -> str:
        if percent:
            return f"{100 * self.value:.1f}% [{100 * self.lower:.1f}, {100 * self.upper:.1f}]"
        return f"{self.value:.{digits}f} [{self.lower:.{digits}f}, {self.upper:.{digits}f}]"


@dataclass(frozen=True)
class SelfPreference:
    judge: str
    model: str
    battles: int
    estimate: Interval | None  # this judge's score for `model` minus the other judges' (0..1 scale)

    @property
    def flagged(self) -> bool:
        """The interval excludes 0: the judge treats its own family differently (sign: the estimate's)."""
        e = self.estimate
        return e is not None and (e.lower > 0 or e.upper < 0)

    @property
    def direction(self) -> str:
        if self.estimate is None:
            return "not measurable (needs another judge on the same battles)"
        if not self.flagged:
            return "none detected"
        return "favours its own family" if self.estimate.value > 0 else "disfavours its own family"


@dataclass(frozen=True)
class JudgeStats:
    judge: str
    games: int
    usable: int
    battles: int  # battles with both games usable
    position_consistency: float | None
    position_bias: float | None
    tie_rate: float | None
    self_preference: tuple[SelfPreference, ...] = ()


@dataclass(frozen=True)
class Agreement:
    judge_a: str
    judge_b: str
    games: int
    kappa_labels: Interval | None  # the five labels
    kappa_wtl: Interval | None  # win / tie / loss


@dataclass(frozen=True)
class HumanAgreement:
    judge: str
    labelled: int  # labelled battles this judge judged in both orders
    agreement: Interval | None


@dataclass(frozen=True)
class JudgeQuality:
    judges: tuple[JudgeStats, ...]
    agreements: tuple[Agreement, ...]
    human: tuple[HumanAgreement, ...] = ()
    human_labels: str | None = None
    human_unmatched: int = 0  # labels that name no battle of the run
    notes: tuple[str, ...] = field(default_factory=tuple)

    def flagged_self_preference(self) -> list[SelfPreference]:
        return [p for j in self.judges for p in j.self_preference if p.flagged]


# ---------------------------------------------------------------------------------------- human labels

@dataclass(frozen=True)
class HumanLabel:
    query_id: str
    model_a: str
    model_b: str
    winner: str  # model_a, model_b or "tie"
    dataset: str | None = None
    subset: str | None = None


def read_human_labels(path: Path, models: Sequence[str] | None = None) -> list[HumanLabel]:
    """``{query_id, model_a, model_b, winner}`` per line (``winner``: one of the two models or "tie";
    optional ``dataset`` and ``subset`` narrow the match). A bad line is a ConfigError naming file:line:field."""
    out: list[HumanLabel] = []
    try:
        lines = path.read_bytes().splitlines()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the human labels: {exc.strerror or exc}") from None
    for n, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ConfigError(f"{where}: not valid JSON: {exc}") from None
        if not isinstance(row, dict):
            raise ConfigError(f"{where}: a label must be a JSON object")
        values: dict[str, str] = {}
        for key in ("query_id", "model_a", "model_b", "winner"):
            v = row.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and key == "query_id":
                v = str(v)
            if not isinstance(v, str) or not v:
                raise ConfigError(f"{where}: {key}: missing or not a non-empty string (got {v!r})")
            values[key] = v
        for key in ("model_a", "model_b"):
            if models is not None and values[key] not in models:
                raise ConfigError(f"{where}: {key}: {values[key]!r} is not one of the models {list(models)}")
        if values["model_a"] == values["model_b"]:
            raise ConfigError(f"{where}: model_b: the same model as model_a")
        if values["winner"] not in (values["model_a"], values["model_b"], TIE):
            raise ConfigError(f"{where}: winner: must be model_a's name, model_b's name or \"tie\", "
                              f"got {values['winner']!r}")
        extra = {k: row.get(k) for k in ("dataset", "subset")}
        for k, v in extra.items():
            if v is not None and not isinstance(v, str):
                raise ConfigError(f"{where}: {k}: must be a string")
        unknown = sorted(set(row) - {"query_id", "model_a", "model_b", "winner", "dataset", "subset"})
        if unknown:
            raise ConfigError(f"{where}: {unknown[0]}: unknown field (known: query_id, model_a, model_b, winner, "
                              "dataset, subset)")
        out.append(HumanLabel(values["query_id"], values["model_a"], values["model_b"], values["winner"],
                              extra["dataset"], extra["subset"]))
    return out


# ---------------------------------------------------------------------------------------------- figures

def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _z(ci: float) -> float:
    return NormalDist().inv_cdf(0.5 + ci / 2)


def cluster_share(hits: np.ndarray, counts: np.ndarray, ci: float) -> Interval | None:
    """A ratio sum(hits) / sum(counts) over clusters with its cluster-robust normal interval."""
    total = float(counts.sum())
    if total == 0:
        return None
    p = float(hits.sum()) / total
    g = len(counts)
    if g < 2:
        return Interval(p, p, p)
    var = g / (g - 1) * float(((hits - p * counts) ** 2).sum()) / total**2
    half = _z(ci) * math.sqrt(var)
    return Interval(p, p - half, p + half)


def _kappa(conf: np.ndarray) -> np.ndarray:
    """Cohen's kappa of confusion matrices (..., K, K)."""
    n = conf.sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        po = np.trace(conf, axis1=-2, axis2=-1) / n
        pe = (conf.sum(axis=-1) * conf.sum(axis=-2)).sum(axis=-1) / n**2
        return np.where(pe < 1, (po - pe) / (1 - pe), np.nan)


def kappa_interval(a: np.ndarray, b: np.ndarray, cluster: np.ndarray, k: int, *, rounds: int, ci: float,
                   seed: int) -> Interval | None:
    """Cohen's kappa of two label arrays (codes 0..k-1) with a percentile bootstrap over the clusters."""
    if len(a) == 0:
        return None
    _, cl = np.unique(cluster, return_inverse=True)
    g = int(cl.max()) + 1
    per = np.zeros((g, k * k))
    np.add.at(per, (cl, a * k + b), 1.0)
    value = float(_kappa(per.sum(axis=0).reshape(k, k)))
    if math.isnan(value):
        return None
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, g, size=(rounds, g))
    weights = np.zeros((rounds, g))
    np.add.at(weights, (np.arange(rounds)[:, None], draws), 1.0)
    boot = _kappa((weights @ per).reshape(rounds, k, k))
    boot = boot[~np.isnan(boot)]
    if len(boot) == 0:
        return Interval(value, value, value)
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return Interval(value, float(lo), float(hi))


def _pairs(games: Iterable[Game]) -> dict[BattleKey, list[int | None]]:
    out: dict[BattleKey, list[int | None]] = {}
    for g in games:
        slot = out.setdefault(battle_key(g), [None, None])
        slot[0 if g.candidate_is_a else 1] = g.outcome
    return out


def _scores(games: Iterable[Game]) -> dict[BattleKey, float]:
    """Each battle's sample score (candidate's view), for battles with both games usable."""
    out = {}
    for key, (first, second) in _pairs(games).items():
        s = sample_score(first, second)
        if s is not None:
            out[key] = s
    return out


def judge_stats(name: str, games: Sequence[Game]) -> JudgeStats:
    usable = [g for g in games if g.outcome is not None]
    ties = sum(1 for g in usable if g.outcome == 0)
    decisive = [g for g in usable if g.outcome]
    a_wins = sum(1 for g in decisive if ((g.outcome or 0) > 0) == g.candidate_is_a)
    b_wins = len(decisive) - a_wins
    both = [(f, s) for f, s in _pairs(games).values() if f is not None and s is not None]
    agree = sum(1 for f, s in both if _sign(f) == _sign(s))
    return JudgeStats(
        name, len(games), len(usable), len(both),
        agree / len(both) if both else None,
        (a_wins - b_wins) / (a_wins + b_wins) if a_wins + b_wins else None,
        ties / len(usable) if usable else None,
    )


def self_preference(judge: str, model: str, by_judge: dict[str, dict[BattleKey, float]], ci: float) -> SelfPreference:
    """``judge``'s mean score for ``model`` minus the other judges' mean, over the battles all of them scored."""
    own = by_judge[judge]
    others = [s for j, s in by_judge.items() if j != judge]
    hits: dict[tuple[str, str, str], list[float]] = {}
    n = 0
    for key, s in own.items():
        if model not in (key[3], key[4]) or not others or any(key not in o for o in others):
            continue
        side = (lambda x: x) if key[3] == model else (lambda x: 1.0 - x)
        diff = side(s) - float(np.mean([side(o[key]) for o in others]))
        slot = hits.setdefault(key[:3], [0.0, 0.0])
        slot[0] += diff
        slot[1] += 1
        n += 1
    if not others or n == 0:
        return SelfPreference(judge, model, n, None)
    arr = np.array(list(hits.values()))
    return SelfPreference(judge, model, n, cluster_share(arr[:, 0], arr[:, 1], ci))


def human_agreement(judge: str, scores: dict[BattleKey, float], labels: Sequence[HumanLabel],
                    ci: float) -> tuple[HumanAgreement, int]:
    """(agreement of the judge's battle verdicts with the labels, labels that match no battle)."""
    index: dict[tuple[str, str, str], list[tuple[BattleKey, float]]] = {}
    for key, s in scores.items():
        index.setdefault((key[2], key[3], key[4]), []).append((key, s))
    per_query: dict[tuple[str, str, str], list[int]] = {}
    unmatched = 0
    for lab in labels:
        found = index.get((lab.query_id, lab.model_a, lab.model_b)) or index.get((lab.query_id, lab.model_b, lab.model_a))
        found = [(k, s) for k, s in found or () if (lab.dataset is None or k[0] == lab.dataset)
                 and (lab.subset is None or k[1] == lab.subset)]
        if not found:
            unmatched += 1
            continue
        key, s = found[0]
        verdict = _sign(s - 0.5)  # candidate's view
        truth = 0 if lab.winner == TIE else (1 if lab.winner == key[3] else -1)
        slot = per_query.setdefault(key[:3], [0, 0])
        slot[0] += verdict == truth
        slot[1] += 1
    if not per_query:
        return HumanAgreement(judge, 0, None), unmatched
    arr = np.array(list(per_query.values()), dtype=float)
    return HumanAgreement(judge, int(arr[:, 1].sum()), cluster_share(arr[:, 0], arr[:, 1], ci)), unmatched


def _wtl(o: int) -> int:
    return _sign(o) + 1


def assess(games: Sequence[Game], cfg: RunConfig, judges: Sequence[str], *, seed: int) -> JudgeQuality:
    """Every figure of the module for a run's games (``judges``: the panel's names; () = the one judge)."""
    ci, rounds = cfg.rating.ci, min(cfg.rating.rounds, 2000)
    names = list(judges) or [cfg.judge.name]
    per_judge = {j: [g for g in games if (g.judge if judges else cfg.judge.name) == j] for j in names}
    scores = {j: _scores(gs) for j, gs in per_judge.items()}
    related = {j.name: j.related_to for j in cfg.panel_judges}
    stats = []
    for j in names:
        st = judge_stats(j, per_judge[j])
        prefs = tuple(self_preference(j, m, scores, ci) for m in related.get(j, ()))
        stats.append(JudgeStats(st.judge, st.games, st.usable, st.battles, st.position_consistency,
                                st.position_bias, st.tie_rate, prefs))
    agreements = []
    games_by: dict[str, dict[tuple[BattleKey, bool], int]] = {
        j: {(battle_key(g), g.candidate_is_a): g.outcome for g in gs if g.outcome is not None} for j, gs in per_judge.items()
    }
    for i, ja in enumerate(names):
        for jb in names[i + 1:]:
            common = [k for k in games_by[ja] if k in games_by[jb]]
            a = np.array([games_by[ja][k] + 2 for k in common], dtype=np.int64)
            b = np.array([games_by[jb][k] + 2 for k in common], dtype=np.int64)
            ids: dict[tuple[str, str, str], int] = {}
            cluster = np.array([ids.setdefault(k[0][:3], len(ids)) for k in common], dtype=np.int64)
            agreements.append(Agreement(
                ja, jb, len(common),
                kappa_interval(a, b, cluster, 5, rounds=rounds, ci=ci, seed=seed),
                kappa_interval(np.sign(a - 2) + 1, np.sign(b - 2) + 1, cluster, 3, rounds=rounds, ci=ci, seed=seed),
            ))
    human: list[HumanAgreement] = []
    unmatched = 0
    path = cfg.panel.human_labels
    if path is not None:
        labels = read_human_labels(path, [m.name for m in cfg.models])
        for j in names:
            h, unmatched = human_agreement(j, scores[j], labels, ci)
            human.append(h)
    notes = []
    if any(related.values()) and len(names) < 2:
        notes.append("self-preference needs a second judge on the same battles")
    return JudgeQuality(tuple(stats), tuple(agreements), tuple(human), str(path) if path else None, unmatched,
                        tuple(notes))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def quality_lines(q: JudgeQuality, seen: dict[str, int] | None = None, battles: int | None = None) -> list[str]:
    """The judge quality report as text lines (terminal summary, report_table.txt)."""
    lines = ["judge quality (intervals: query is the unit):"]
    for s in q.judges:
        saw = ""
        if seen and battles:
            saw = f", saw {seen.get(s.judge, 0)}/{battles} battles ({_pct(seen.get(s.judge, 0) / battles)})"
        lines.append(f"  {s.judge}: position consistency {_pct(s.position_consistency)}, position bias "
                     f"{'-' if s.position_bias is None else f'{s.position_bias:+.3f}'}, tie rate {_pct(s.tie_rate)}{saw}")
        for p in s.self_preference:
            est = "" if p.estimate is None else f" {p.estimate.value:+.3f} [{p.estimate.lower:+.3f}, {p.estimate.upper:+.3f}]"
            flag = "FLAG " if p.flagged else ""
            lines.append(f"    {flag}self-preference toward {p.model}:{est} ({p.direction}; {p.battles} battles)")
    for a in q.agreements:
        k5 = a.kappa_labels.text() if a.kappa_labels else "-"
        k3 = a.kappa_wtl.text() if a.kappa_wtl else "-"
        lines.append(f"  kappa {a.judge_a} ~ {a.judge_b}: 5 labels {k5}, win/tie/loss {k3} ({a.games} games)")
    for h in q.human:
        txt = h.agreement.text(percent=True) if h.agreement else "-"
        lines.append(f"  {h.judge} vs human labels: agreement {txt} ({h.labelled} labelled battles)")
    if q.human_unmatched:
        lines.append(f"  {q.human_unmatched} human label(s) name no battle of this run")
    lines.extend(f"  note: {n}" for n in q.notes)
    return lines
