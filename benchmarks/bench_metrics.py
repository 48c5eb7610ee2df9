"""Reference metrics speed: 10,000 answer pairs (ROUGE-1/2/L + BLEU-1..4), ours vs rouge-score + NLTK.

Answers are 50-250 words (or 50-300 Chinese characters), references 10-60 words (10-80 characters),
drawn from a Zipf-like vocabulary. The reference implementation (Google's rouge-score with our
tokens, NLTK sentence_bleu per order) runs on a slice of the same pairs in the same process; its
per-pair time is scaled to the full count. Bar: 10k pairs in well under a second.

    python benchmarks/bench_metrics.py [--pairs 10000] [--reference-pairs 500]
"""

from __future__ import annotations

import argparse
import random
import time
import warnings

from arena_engine.metrics import reference_metrics, sample_metrics, tokenize

ZH_CHARS = (
    "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后"
    "多定行学法所民得经十三之进着等部度家电力里如水化高自二理起小物现实加量都两体制机当使点从业本去把性好应开它合"
)


def make_pairs(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    words = [f"word{i}" for i in range(3000)]

    def pick(pool: str | list[str]) -> str:
        return pool[min(int(rng.paretovariate(1.1)), len(pool) - 1)]

    preds, refs = [], []
    for i in range(n):
        if i % 4 == 3:  # a quarter Chinese
            preds.append("".join(pick(ZH_CHARS) for _ in range(rng.randint(50, 300))) + "。")
            refs.append("".join(pick(ZH_CHARS) for _ in range(rng.randint(10, 80))) + "。")
        else:
            preds.append(" ".join(pick(words) for _ in range(rng.randint(50, 250))) + ".")
            refs.append(" ".join(pick(words) for _ in range(rng.randint(10, 60))) + ".")
    return preds, refs


def reference_seconds(preds: list[str], refs: list[str]) -> float:
    from nltk.translate.bleu_score import sentence_bleu
    from rouge_score import rouge_scorer

    class Tok:
        def tokenize(self, text: str) -> list[str]:
            return tokenize(text)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Tok())
    weights = [tuple(1.0 if i == n else 0.0 for i in range(4)) for n in range(4)]
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for p, r in zip(preds, refs, strict=True):
            scorer.score(r, p)
            hyp, ref = tokenize(p), tokenize(r)
            for w in weights:
                sentence_bleu([ref], hyp, weights=w)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--reference-pairs", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    preds, refs = make_pairs(args.pairs, seed=1)
    t0 = time.perf_counter()
    sample_metrics("warm up the compiled kernel", "warm up")
    warm = time.perf_counter() - t0
    runs = [_timed(lambda: reference_metrics(preds, refs)) for _ in range(args.rounds)]
    ours, ours_cpu = min(w for w, _ in runs), min(c for _, c in runs)
    k = min(args.reference_pairs, args.pairs)
    theirs = reference_seconds(preds[:k], refs[:k]) * args.pairs / k
    t0 = time.perf_counter()
    for p, r in zip(preds[:1000], refs[:1000], strict=True):
        sample_metrics(p, r)
    one_by_one = (time.perf_counter() - t0) / 1000
    print(f"first call (kernel load or compile): {warm:.2f} s")
    print(
        f"ours: {args.pairs} pairs in {ours:.3f} s wall, {ours_cpu:.3f} s CPU "
        f"({ours / args.pairs * 1e6:.1f} us/pair, best of {args.rounds})"
    )
    print(f"ours one pair at a time (sample_metrics): {one_by_one * 1e6:.1f} us/pair")
    print(f"rouge-score + nltk: {theirs:.2f} s for {args.pairs} pairs (measured on {k}, scaled)")
    per_10k = ours_cpu / args.pairs * 1e4
    print(
        f"speed-up: {theirs / ours:.1f}x; bar (< 1 s CPU per 10k pairs): "
        f"{per_10k:.2f} s, {'met' if per_10k < 1 else 'NOT met'}"
    )


def _timed(fn: object) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): CPU time stays meaningful on a shared machine."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()  # type: ignore[operator]
    return time.perf_counter() - t0, time.process_time() - c0


if __name__ == "__main__":
    main()
