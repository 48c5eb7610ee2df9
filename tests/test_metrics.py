"""Reference metrics: hand-checked cases, and agreement with independent implementations.

The independent references are Google's ``rouge-score`` (ROUGE-1/2/L, fed our tokens) and NLTK's
``sentence_bleu`` with a single weight on order n and no smoothing (EvalScope's BLEU-n).
"""

from __future__ import annotations

import math
import random
import warnings

import numpy as np
import pytest
from nltk.translate.bleu_score import sentence_bleu
from rouge_score import rouge_scorer

from arena_engine import metrics
from arena_engine.metrics import (
    BLEU_NAMES,
    METRIC_NAMES,
    ROUGE_NAMES,
    reference_metrics,
    sample_metrics,
    sample_metrics_batch,
    tokenize,
)


class _OurTokens:
    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


_SCORER = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=_OurTokens())


def independent(prediction: str, reference: str) -> dict[str, float]:
    """The same metrics computed by rouge-score and NLTK."""
    got = _SCORER.score(reference, prediction)  # rouge-score takes (target, prediction)
    out: dict[str, float] = {}
    for label, key in (("1", "rouge1"), ("2", "rouge2"), ("L", "rougeL")):
        out[f"Rouge-{label}-R"] = got[key].recall
        out[f"Rouge-{label}-P"] = got[key].precision
        out[f"Rouge-{label}-F"] = got[key].fmeasure
    hyp, ref = tokenize(prediction), tokenize(reference)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns on every order without a match
        for n in range(1, 5):
            weights = tuple(1.0 if i == n - 1 else 0.0 for i in range(4))
            out[f"bleu-{n}"] = float(sentence_bleu([ref], hyp, weights=weights))
    return out


EN = [
    "The capital of France is Paris.",
    "Paris is the capital and most populous city of France.",
    "The largest mammal in the world is the blue whale.",
    "Blue whales can grow up to 30 metres long and weigh 200 tonnes.",
    "Photosynthesis is the process by which green plants use sunlight to make food.",
    "Plants turn light, water and carbon dioxide into sugar and oxygen.",
    "Harper Lee wrote 'To Kill a Mockingbird', published in 1960.",
    "To improve your time management, plan your day and set clear priorities.",
    "Break big tasks into small steps, and avoid multitasking when you can.",
    "Python is dynamically typed; JavaScript runs in the browser and on Node.js.",
    "Quantum computers use qubits, which can be in a superposition of states.",
    "Regular exercise, enough sleep and a balanced diet help to reduce stress.",
    "The theory of relativity, developed by Albert Einstein, describes gravity as curved spacetime.",
    "It is what it is, and that is that: the the the.",
]
ZH = [
    "法国的首都是巴黎。",
    "巴黎是法国的首都，也是人口最多的城市。",
    "世界上最大的哺乳动物是蓝鲸。",
    "光合作用是绿色植物利用阳光制造养分的过程。",
    "要提高时间管理能力，可以制定计划并设定优先级。",
    "量子计算机使用量子比特，它可以处于叠加态。",
    "规律运动、充足睡眠和均衡饮食有助于减轻压力。",
    "《杀死一只知更鸟》的作者是哈珀·李。",
    "Python 是一种动态类型语言，GPT模型 可以写代码。",
    "東京は日本の首都です。",
]


def _mutate(rng: random.Random, text: str) -> str:
    """A plausible model answer from a reference: edits, reordering, padding, or a wholly other text."""
    cjk = not text.isascii()
    units = list(text) if cjk and rng.random() < 0.7 else text.split()
    pool = EN + ZH
    for _ in range(rng.randint(0, 6)):
        op = rng.random()
        if op < 0.25 and units:
            del units[rng.randrange(len(units))]
        elif op < 0.5:
            donor = rng.choice(pool)
            donor_units = list(donor) if cjk else donor.split()
            units.insert(rng.randint(0, len(units)), rng.choice(donor_units))
        elif op < 0.65 and len(units) > 1:
            i, j = rng.randrange(len(units)), rng.randrange(len(units))
            units[i], units[j] = units[j], units[i]
        elif op < 0.8:
            units = units + (list(rng.choice(pool)) if cjk else rng.choice(pool).split())
        elif op < 0.9:
            units = [u.upper() if rng.random() < 0.3 else u for u in units]
        else:
            units = list(rng.choice(pool)) if cjk else rng.choice(pool).split()
    return ("" if cjk else " ").join(units)


def _pairs(seed: int, n_en: int, n_zh: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for pool, n in ((EN, n_en), (ZH, n_zh)):
        for _ in range(n):
            ref = rng.choice(pool)
            if rng.random() < 0.3:
                ref = ref + " " + rng.choice(pool)
            pairs.append((_mutate(rng, ref), ref))
    edge = [
        ("", "The capital of France is Paris."),
        ("Paris.", "The capital of France is Paris."),
        ("...", "Paris"),
        ("Paris", "!!!"),
        ("the the the the", "the cat"),
        ("巴黎", "法国的首都是巴黎。"),
        ("A B C D E F", "a b c d e f"),
        ("x", "x"),
        ("x y", "x y"),
    ]
    return pairs + edge


PAIRS = _pairs(seed=20260704, n_en=250, n_zh=150)


@pytest.fixture(scope="module")
def expected() -> list[dict[str, float]]:
    return [independent(p, r) for p, r in PAIRS]


def test_agrees_with_rouge_score_and_nltk_per_sample(expected: list[dict[str, float]]) -> None:
    assert len(PAIRS) >= 400
    batch = sample_metrics_batch([p for p, _ in PAIRS], [r for _, r in PAIRS])
    assert batch.shape == (len(PAIRS), len(METRIC_NAMES))
    nonzero = np.zeros(len(METRIC_NAMES), dtype=int)
    for i, (prediction, reference) in enumerate(PAIRS):
        want = expected[i]
        one = sample_metrics(prediction, reference)
        assert list(one) == list(METRIC_NAMES)
        for j, name in enumerate(METRIC_NAMES):
            assert one[name] == pytest.approx(want[name], rel=1e-9, abs=1e-12), (name, prediction, reference)
            assert batch[i, j] == one[name]
            nonzero[j] += want[name] > 0
    # the pairs exercise every metric, not just the zero corner
    assert (nonzero > 50).all(), dict(zip(METRIC_NAMES, nonzero.tolist(), strict=True))


def test_means_agree_with_independent_means(expected: list[dict[str, float]]) -> None:
    preds, refs = [p for p, _ in PAIRS], [r for _, r in PAIRS]
    got = reference_metrics(preds, refs)
    assert list(got) == list(METRIC_NAMES)
    for name in METRIC_NAMES:
        want = sum(e[name] for e in expected) / len(PAIRS)
        assert got[name] == pytest.approx(want, rel=1e-9)


def test_chinese_pairs_are_scored_by_character() -> None:
    zh_pairs = [(p, r) for p, r in PAIRS if not r.isascii()]
    assert len(zh_pairs) >= 150
    for p, r in zh_pairs[:50]:
        assert sample_metrics(p, r)["Rouge-1-R"] == pytest.approx(independent(p, r)["Rouge-1-R"])
    # the sentence and its reordering share every character: unigram scores are perfect
    m = sample_metrics("巴黎是法国的首都", "法国的首都是巴黎")
    assert m["Rouge-1-R"] == m["Rouge-1-P"] == m["bleu-1"] == 1.0
    assert m["Rouge-2-R"] == pytest.approx(5 / 7)  # 巴黎 法国 国的 的首 首都
    assert m["Rouge-L-R"] == pytest.approx(5 / 8)  # 法国的首都


def test_hand_computed_english_example() -> None:
    m = sample_metrics("The cat sat on the mat.", "the cat is on the mat")
    assert m["Rouge-1-R"] == m["Rouge-1-P"] == m["Rouge-1-F"] == pytest.approx(5 / 6)
    assert m["Rouge-2-F"] == pytest.approx(3 / 5)
    assert m["Rouge-L-R"] == pytest.approx(5 / 6)  # the cat on the mat
    assert [m[b] for b in BLEU_NAMES] == pytest.approx([5 / 6, 3 / 5, 1 / 4, 0.0])


def test_brevity_penalty_and_clipping() -> None:
    short = sample_metrics("the cat", "the cat sat on the mat")
    assert short["bleu-1"] == pytest.approx(math.exp(1 - 6 / 2))
    assert short["Rouge-1-P"] == 1.0 and short["Rouge-1-R"] == pytest.approx(2 / 6)
    repeated = sample_metrics("the the the the", "the cat")
    assert repeated["bleu-1"] == pytest.approx(1 / 4)  # one "the" in the reference clips the four
    assert repeated["Rouge-1-P"] == pytest.approx(1 / 4)
    assert repeated["Rouge-1-R"] == pytest.approx(1 / 2)


def test_identical_answers_score_one_regardless_of_case_and_punctuation() -> None:
    m = sample_metrics("PARIS is the capital of FRANCE!!", "Paris, is the capital of France.")
    assert all(v == pytest.approx(1.0) for v in m.values()), m


def test_nothing_to_compare_scores_zero() -> None:
    for prediction, reference in (("", "Paris"), ("Paris", ""), ("...", "!!!"), ("London", "Paris")):
        assert set(sample_metrics(prediction, reference).values()) == {0.0}


def test_long_answers_lcs_matches_reference() -> None:
    rng = random.Random(7)
    words = [f"w{i}" for i in range(40)]
    prediction = " ".join(rng.choice(words) for _ in range(700))
    reference = " ".join(rng.choice(words) for _ in range(450))
    got, want = sample_metrics(prediction, reference), independent(prediction, reference)
    for name in METRIC_NAMES:
        assert got[name] == pytest.approx(want[name], rel=1e-9), name


def test_batches_larger_than_a_chunk(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics, "_CHUNK", 7)
    preds, refs = [p for p, _ in PAIRS[:60]], [r for _, r in PAIRS[:60]]
    batch = sample_metrics_batch(preds, refs)
    for i, (p, r) in enumerate(zip(preds, refs, strict=True)):
        assert batch[i].tolist() == list(sample_metrics(p, r).values())
    means = reference_metrics(preds, refs)
    assert list(means.values()) == pytest.approx(batch.mean(axis=0).tolist())


def test_empty_and_mismatched_inputs() -> None:
    assert reference_metrics([], []) == {}
    assert sample_metrics_batch([], []).shape == (0, len(METRIC_NAMES))
    with pytest.raises(ValueError, match="2 predictions but 1 references"):
        reference_metrics(["a", "b"], ["a"])


def test_names_are_evalscopes() -> None:
    assert ROUGE_NAMES[:3] == ("Rouge-1-R", "Rouge-1-P", "Rouge-1-F")
    assert ROUGE_NAMES[-1] == "Rouge-L-F"
    assert BLEU_NAMES == ("bleu-1", "bleu-2", "bleu-3", "bleu-4")
    assert len(METRIC_NAMES) == 13


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("The capital of France is Paris.", ["the", "capital", "of", "france", "is", "paris"]),
        ("don't snake_case 3.14 x2", ["don", "t", "snake", "case", "3", "14", "x2"]),
        ("Café Straße ÉTÉ", ["café", "straße", "été"]),
        ("法国的首都是巴黎。", ["法", "国", "的", "首", "都", "是", "巴", "黎"]),
        ("GPT模型很好，OK？", ["gpt", "模", "型", "很", "好", "ok"]),
        ("東京はカタカナ", ["東", "京", "は", "カ", "タ", "カ", "ナ"]),
        ("한국어 텍스트", ["한", "국", "어", "텍", "스", "트"]),
        ("ＡＢＣ１２３ and ｈｅｌｌｏ", ["abc123", "and", "hello"]),  # full-width forms, NFKC
        ("Ｐｙｔｈｏｎ３。", ["python3"]),
        ("  \n\t ", []),
        ("— « » !? …", []),
        ("Привет, мир", ["привет", "мир"]),
    ],
)
def test_tokenize(text: str, tokens: list[str]) -> None:
    assert tokenize(text) == tokens


def test_ascii_fast_path_matches_the_general_tokenizer() -> None:
    rng = random.Random(3)
    alphabet = "abcXYZ019 _-.,'\"!?\t\n()[]{}<>@#$%^&*+=/\\|~`:;"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tokenize(text) == metrics._TOKEN.findall(text.lower()), text


def test_the_python_scorer_gives_the_kernels_bits() -> None:
    """Small batches are scored in Python until the kernel is loaded (a first run after an install): the
    scores must not depend on which one ran, down to the last bit."""
    rng = random.Random(11)
    alphabet = ["a", "b", "c", "d", "e", "f", "g", "h", "的", "是"]
    texts = []
    for _ in range(1500):
        width = rng.randint(1, len(alphabet))
        texts.append(" ".join(rng.choice(alphabet[:width]) for _ in range(rng.choice([0, 1, 2, 3, 7, 40, 130]))))
    predictions, references = texts[:750], texts[750:]
    python = metrics._score_chunk_python(predictions, references)
    metrics.load_kernel()
    kernel = metrics._score_chunk(predictions, references)
    assert python.shape == kernel.shape == (750, len(metrics.METRIC_NAMES))
    assert np.array_equal(python.view(np.int64), kernel.view(np.int64))
    assert (kernel[:, 6:9] > 0).sum() > 500  # the LCS rows were exercised, not only the empty pairs


def test_run_metrics_are_scored_in_chunks_as_answers_come_and_chunking_changes_no_digit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from arena_engine import results

    rng = random.Random(7)
    words = ["cat", "dog", "sat", "on", "the", "mat", "a", "red", "fox"]
    items = [(m, "d", s, " ".join(rng.choices(words, k=rng.randint(1, 9))), " ".join(rng.choices(words, k=5)))
             for m in ("a", "b") for s in ("x", "y") for _ in range(11)]
    whole = results.reference_metrics(items)
    sizes: list[int] = []
    score = metrics.sample_metrics_batch

    def counted(preds: list[str], refs: list[str]) -> np.ndarray:
        sizes.append(len(preds))
        return score(preds, refs)

    monkeypatch.setattr(metrics, "sample_metrics_batch", counted)
    monkeypatch.setattr(results, "METRIC_CHUNK", 3)
    chunked = results.reference_metrics(iter(items))
    assert max(sizes) == 3 and sum(sizes) == len(items)  # never more than a chunk of answers held
    assert chunked.keys() == whole.keys() and all(chunked[g].n == whole[g].n == 11 for g in whole)
    for g in whole:
        assert chunked[g].sums == whole[g].sums  # the same bits: fsum over the same scores
