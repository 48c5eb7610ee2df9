"""What the simulated judge says: a verdict drawn from a Bradley-Terry model of the two answers' qualities.

The judge reads the `[sim:...]` tags out of the last user message (first tag = answer A, second = B; an
answer without a tag counts as quality 0) and draws from an ordered-logistic (Bradley-Terry with ties)
model. Pure functions of the config, the prompt and a request key: no I/O, no global state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import orjson

from arena_engine.sim.answers import TAG_RE
from arena_engine.sim.config import SimConfig, SimModel
from arena_engine.sim.draws import normal, text_key, uniforms

LABELS: tuple[str, ...] = ("A>>B", "A>B", "A=B", "B>A", "B>>A")

_PREFER_A_LABEL = "A>B"  # what a judge that ignores the answers says (prefer_a_rate)
_PREFER_A_STREAM = 0xA1A1A  # draw index of the prefer-A coin, apart from the verdict's own draws

_LOGIT_CACHE_SIZE = 65536  # a battle's answers are judged in two orders and on retries: remember the work

# Gauss-Hermite nodes and weights normalised so that sum(w * f(sqrt(2) * sd * x)) = E f(N(0, sd^2)).
_HERMITE: tuple[tuple[float, float], ...] = tuple(
    (float(x), float(w) / math.sqrt(math.pi))
    for x, w in zip(*np.polynomial.hermite.hermgauss(40), strict=True)
)

_REASONS = {
    "A>>B": "Assistant A answers the question far more completely and accurately; Assistant B misses the point.",
    "A>B": "Assistant A is somewhat more complete and better focused than Assistant B.",
    "A=B": "Both assistants give answers of similar quality and coverage.",
    "B>A": "Assistant B is somewhat more complete and better focused than Assistant A.",
    "B>>A": "Assistant B answers the question far more completely and accurately; Assistant A misses the point.",
}


def tie_margin(tie_rate: float) -> float:
    """The cut point m with P(|Logistic| <= m) = tie_rate, i.e. the tie probability at equal strengths."""
    return math.log((1.0 + tie_rate) / (1.0 - tie_rate))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def label_probabilities(logit: float, tie_rate: float, strong_margin: float) -> dict[str, float]:
    """P(label) for a latent logit (A's advantage) without judge noise: the exact ordered-logistic model."""
    m1 = tie_margin(tie_rate)
    m2 = m1 + strong_margin
    # P(y > c) with y = logit + Logistic(0, 1) is sigmoid(logit - c).
    p_gt = [_sigmoid(logit - c) for c in (m2, m1, -m1, -m2)]
    return {
        "A>>B": p_gt[0],
        "A>B": p_gt[1] - p_gt[0],
        "A=B": p_gt[2] - p_gt[1],
        "B>A": p_gt[3] - p_gt[2],
        "B>>A": 1.0 - p_gt[3],
    }


class Judge:
    """Verdict drawing for one config (caches model qualities and per-(model, query) strengths)."""

    def __init__(self, config: SimConfig) -> None:
        self._config = config
        self._quality: Mapping[str, float] = {m.name: m.quality for m in config.models}
        self._m1 = tie_margin(config.tie_rate)
        self._m2 = self._m1 + config.strong_margin
        self._logits: dict[tuple[tuple[str, str], ...], float] = {}
        self._strengths: dict[tuple[str, str], float] = {}

    def habits(self, judge: SimModel | None) -> tuple[float, float]:
        """(judge noise, position bias) of a judge model: its own, else the config's."""
        cfg = self._config
        if judge is None:
            return cfg.judge_noise, cfg.position_bias
        noise = cfg.judge_noise if judge.judge_noise is None else judge.judge_noise
        bias = cfg.position_bias if judge.position_bias is None else judge.position_bias
        return noise, bias

    @staticmethod
    def preference(judge: SimModel | None, model_a: str | None, model_b: str | None) -> float:
        """The judge's self-preference shift of A's advantage (+ when A is its favoured candidate)."""
        if judge is None or not judge.self_preference or judge.prefers is None:
            return 0.0
        return judge.self_preference * ((model_a == judge.prefers) - (model_b == judge.prefers))

    def query_scale(self, qhex: str) -> float:
        """Per-query difficulty: how strongly the quality gap shows on this query."""
        spread = self._config.difficulty_spread
        (u,) = uniforms(self._config.seed, int(qhex, 16), 0x5CA1E, 1)
        return 1.0 - spread + 2.0 * spread * u

    def strength(self, model: str, qhex: str) -> float:
        """A model's latent strength on one query: its quality plus a per-(model, query) deviation."""
        base = self._quality.get(model, 0.0)
        if self._config.answer_noise == 0.0:
            return base
        cached = self._strengths.get((model, qhex))
        if cached is not None:
            return cached
        (u,) = uniforms(self._config.seed, text_key("strength", model, qhex), 0, 1)
        value = base + self._config.answer_noise * normal(u)
        if len(self._strengths) >= _LOGIT_CACHE_SIZE:
            self._strengths.clear()
        self._strengths[(model, qhex)] = value
        return value

    def logit(self, prompt: str, judge: SimModel | None = None) -> float:
        """A's advantage before per-request noise, read from the tags in `prompt` (for `judge`'s habits)."""
        tags = TAG_RE.findall(prompt)[:2]
        _, bias = self.habits(judge)
        if judge is not None:
            a_name = tags[0][0] if tags else None
            b_name = tags[1][0] if len(tags) > 1 else None
            return self._base_logit(prompt) + bias + self.preference(judge, a_name, b_name)
        return self._base_logit(prompt) + bias

    def _base_logit(self, prompt: str) -> float:
        tags = TAG_RE.findall(prompt)[:2]
        key = tuple(tags)
        cached = self._logits.get(key)
        if cached is not None:
            return cached
        a = tags[0] if tags else None
        b = tags[1] if len(tags) > 1 else None
        qhex = a[1] if a else (b[1] if b else None)
        sa = self.strength(a[0], a[1]) if a else 0.0
        sb = self.strength(b[0], b[1]) if b else 0.0
        scale = self.query_scale(qhex) if qhex else 1.0
        value = scale * (sa - sb)
        if len(self._logits) >= _LOGIT_CACHE_SIZE:
            self._logits.clear()
        self._logits[key] = value
        return value

    def label_probabilities_for(self, model_a: str, model_b: str, qhex: str,
                                judge: SimModel | None = None) -> dict[str, float]:
        """Exact P(label) when the judge sees `model_a`'s answer as A and `model_b`'s as B on query `qhex`.

        Integrates the per-request judge noise (Gauss-Hermite quadrature), so tests can compare observed
        verdicts or win rates with what the simulator's latent qualities imply. `judge`: a judge model
        with its own noise, position bias and self-preference (None: the config's global habits).
        """
        cfg = self._config
        noise, bias = self.habits(judge)
        logit = self.query_scale(qhex) * (self.strength(model_a, qhex) - self.strength(model_b, qhex))
        logit += bias + self.preference(judge, model_a, model_b)
        if noise == 0.0:
            out = label_probabilities(logit, cfg.tie_rate, cfg.strong_margin)
        else:
            out = dict.fromkeys(LABELS, 0.0)
            scale = math.sqrt(2.0) * noise
            for node, weight in _HERMITE:
                probs = label_probabilities(logit + scale * node, cfg.tie_rate, cfg.strong_margin)
                for label in LABELS:
                    out[label] += weight * probs[label]
        r = cfg.prefer_a_rate
        if r:
            out = {label: (1.0 - r) * p + (r if label == _PREFER_A_LABEL else 0.0) for label, p in out.items()}
        return out

    def true_winner(self, model_a: str, model_b: str, qhex: str) -> int:
        """+1 when `model_a`'s answer to query `qhex` is the stronger (its latent strength), -1 when
        `model_b`'s is, 0 when equal: the truth labels a perfect judge would give."""
        d = self.strength(model_a, qhex) - self.strength(model_b, qhex)
        return (d > 0) - (d < 0)

    def battle_probabilities(self, candidate: str, opponent: str, qhex: str,
                             judge: SimModel | None = None) -> dict[int, float]:
        """P(battle verdict = win +1 / tie 0 / loss -1, candidate's view) when `judge` judges both orders
        (independent draws) and the verdict is their agreed sign (a tie when they disagree), as the
        pipeline scores a battle."""
        first = self.label_probabilities_for(candidate, opponent, qhex, judge)
        second = self.label_probabilities_for(opponent, candidate, qhex, judge)
        win1 = first["A>>B"] + first["A>B"]
        loss1 = first["B>A"] + first["B>>A"]
        win2 = second["B>A"] + second["B>>A"]
        loss2 = second["A>>B"] + second["A>B"]
        win, loss = win1 * win2, loss1 * loss2
        return {1: win, -1: loss, 0: 1.0 - win - loss}

    def verdict(self, prompt: str, request_key: int, judge: SimModel | None = None) -> str:
        """One of LABELS, deterministic in (config seed, request_key, prompt)."""
        if self._config.prefer_a_rate:
            (u_prefer,) = uniforms(self._config.seed, request_key, _PREFER_A_STREAM, 1)
            if u_prefer < self._config.prefer_a_rate:
                return _PREFER_A_LABEL
        noise, _ = self.habits(judge)
        u_noise, u_logistic = uniforms(self._config.seed, request_key, 0x7E4D1C7, 2)
        y = self.logit(prompt, judge) + noise * normal(u_noise)
        u = min(max(u_logistic, 1e-12), 1.0 - 1e-12)
        y += math.log(u / (1.0 - u))
        if y > self._m2:
            return "A>>B"
        if y > self._m1:
            return "A>B"
        if y >= -self._m1:
            return "A=B"
        if y >= -self._m2:
            return "B>A"
        return "B>>A"


def render_verdict(label: str, as_json: bool) -> str:
    """The judge's message content for a verdict, in the JSON form or the `[[label]]` bracket form."""
    reason = _REASONS[label]
    if as_json:
        return orjson.dumps({"reasoning": reason, "verdict": label}).decode()
    return f"{reason}\n\nMy final verdict is: [[{label}]]"


def render_bad_verdict(u: float, as_json: bool) -> str:
    """An unparseable verdict: no label at all, or two different labels (chosen by `u`)."""
    if u < 0.5:
        if as_json:
            return orjson.dumps(
                {"reasoning": "Both answers have merits; I cannot decide.", "verdict": "unsure"}
            ).decode()
        return "Both answers have merits and weaknesses; I cannot decide which is better."
    if as_json:
        return orjson.dumps(
            {"reasoning": "First I thought [[A>B]], then [[B>A]].", "verdict": "A>B or B>A"}
        ).decode()
    return "At first glance [[A>B]], but on reflection [[B>A]]."
