"""Reference metrics: ROUGE-1/2/L and BLEU-1..4 of answers against reference answers, offline.

Names are EvalScope's (``Rouge-1-R`` ... ``Rouge-L-F``, ``bleu-1`` ... ``bleu-4``), so reports line
up with its table. Everything runs offline: no model, no tokenizer data, no downloads.

Tokenisation (:func:`tokenize`): the text is NFKC-normalised and lower-cased; every character of a
CJK script (Han ideographs, kana, Hangul, Bopomofo, Yi) is one token, so Chinese is scored by
characters; every other run of letters and digits is one word token. Punctuation, symbols,
whitespace and ``_`` separate tokens and are dropped. The same tokens feed ROUGE and BLEU.

ROUGE (as Google's ``rouge-score`` package, ``rouge1``/``rouge2``/``rougeL`` with our tokens):
n-gram overlap counts with multiplicity, clipped; recall = overlap / reference n-grams, precision =
overlap / prediction n-grams, F = their harmonic mean (0 when both are 0). ROUGE-L uses the length
of the longest common subsequence of the whole token lists (not the sentence-split "summary-level"
variant). An empty side scores 0.

BLEU-n (as EvalScope: NLTK's ``sentence_bleu(weights=...)`` with a single weight of 1 on order n
and no smoothing): ``bleu-n = BP * p_n`` where ``p_n`` is the clipped n-gram precision (matches /
max(1, prediction n-grams)) and ``BP = 1`` if the prediction is longer than the reference, else
``exp(1 - ref_len / pred_len)`` (0 for an empty prediction). A pair with no unigram match scores 0
on every order, and an order with no match scores 0 (NLTK returns ~2e-308 there and warns).

Where we knowingly differ from EvalScope 1.14 (which we match in names, not digits):
- EvalScope tokenises Chinese with jieba (words) and English BLEU with NLTK's ``word_tokenize``
  (case and punctuation kept; it needs the ``punkt`` data, so offline every BLEU is 0). We use the
  one offline tokeniser above for both metrics.
- EvalScope's ROUGE (the ``rouge_chinese`` package) counts distinct n-grams (a set, not a multiset)
  and uses a summary-level LCS over sentences split at ``.``; we use ``rouge-score``'s definitions.

Speed: tokens are mapped to integer ids in Python and a small numba kernel scores a batch of
pairs (n-gram overlaps by iterated dense ranking, LCS by dynamic programming), so 10,000 answer
pairs take well under a second; ``benchmarks/bench_metrics.py`` measures it against
``rouge-score`` + NLTK. The kernel is compiled on first use and cached on disk (numba
``cache=True``): the very first call after installing takes about 4 s of CPU, later processes load
the cache in well under a second. Until the kernel is loaded in the process, batches of up to
``PYTHON_PAIRS`` pairs are scored by the same algorithm in Python (LCS bit-parallel), with the same
bits as the kernel's result (``tests/test_metrics.py``); a run compiles the kernel in a child process
meanwhile (``kernels.py``). The kernel releases the GIL (``nogil``), so a service can warm it
up, or score big batches, in a worker thread without stalling its event loop.

Known limit: scripts without spaces other than CJK (Thai, Lao, Khmer, Myanmar) are not segmented,
and combining marks (e.g. Devanagari vowel signs) split words.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from itertools import chain, count, islice

import numpy as np
from numba import njit

__all__ = [
    "BLEU_NAMES",
    "METRIC_NAMES",
    "ROUGE_NAMES",
    "reference_metrics",
    "sample_metrics",
    "sample_metrics_batch",
    "tokenize",
]

ROUGE_NAMES: tuple[str, ...] = tuple(f"Rouge-{k}-{m}" for k in ("1", "2", "L") for m in ("R", "P", "F"))
BLEU_NAMES: tuple[str, ...] = tuple(f"bleu-{n}" for n in range(1, 5))
METRIC_NAMES: tuple[str, ...] = ROUGE_NAMES + BLEU_NAMES
"""All metric names, in EvalScope's report order."""

_N_METRICS = len(METRIC_NAMES)
_CHUNK = 4096  # pairs scored per kernel call: bounds memory for long inputs
PYTHON_PAIRS = 2048  # pairs up to which a batch is scored in Python while the kernel is not compiled here

# Blocks of scripts written without spaces between words, tokenised one character at a time.
# Only their word characters become tokens; their punctuation (、。「」…) is dropped like all punctuation.
_CJK = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u2e80-\ua4cf"  # CJK radicals, symbols (々〇), kana, Bopomofo, compatibility Jamo, Han ext-A + unified, Yi
    "\ua960-\ua97f"  # Hangul Jamo extended-A
    "\uac00-\ud7ff"  # Hangul syllables, Jamo extended-B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uffdc"  # half-width kana and Hangul (NFKC maps most of them anyway)
    "\U0001b000-\U0001b16f"  # kana supplement / extended
    "\U00020000-\U0003134f"  # Han extensions B-H
)
# A run of word characters outside CJK (no "_"), or else one word character (then a CJK one).
_TOKEN = re.compile(f"[^\\W_{_CJK}]+|[^\\W_]")
# ASCII fast path, same result as _TOKEN on ASCII text: letters lower-cased, digits kept, rest -> space.
_ASCII_TABLE = bytes(
    c if (48 <= c <= 57 or 97 <= c <= 122) else c + 32 if 65 <= c <= 90 else 32 for c in range(256)
)


def tokenize(text: str) -> list[str]:
    """Split ``text`` into lower-cased word tokens, one token per CJK character."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE).decode("ascii").split()
    return _TOKEN.findall(unicodedata.normalize("NFKC", text).lower())


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing multiplier


@njit(cache=True, nogil=True, inline="always")
def _rank_keys(
    keys: np.ndarray, m: int, ranks: np.ndarray, table: np.ndarray, stamp: np.ndarray, call: int, bits: int
) -> int:  # pragma: no cover - compiled
    """Dense ranks of keys[:m] into ranks[:m] (equal keys, equal ranks); returns how many distinct.

    Open addressing (linear probing, Fibonacci hashing) on a table of 2**bits >= 2*m slots
    ``table[slot] = (key, rank)``; a slot is in use only if ``stamp[slot] == call``, so a new
    ``call`` number empties the table without touching it.
    """
    mask = (1 << bits) - 1
    shift = np.uint64(64 - bits)
    kinds = 0
    for i in range(m):
        key = keys[i]
        slot = np.int64((np.uint64(key) * _GOLDEN) >> shift)
        while True:
            if stamp[slot] != call:
                stamp[slot] = call
                table[slot, 0] = key
                table[slot, 1] = kinds
                ranks[i] = kinds
                kinds += 1
                break
            if table[slot, 0] == key:
                ranks[i] = table[slot, 1]
                break
            slot = (slot + 1) & mask
    return kinds


@njit(cache=True, nogil=True, inline="always")
def _prf(overlap: int, n_pred: int, n_ref: int, out: np.ndarray, k: int, at: int) -> None:  # pragma: no cover
    """(recall, precision, F) as rouge-score computes them, into out[k, at:at+3]."""
    recall = overlap / max(n_ref, 1)
    precision = overlap / max(n_pred, 1)
    out[k, at] = recall
    out[k, at + 1] = precision
    out[k, at + 2] = 2.0 * precision * recall / (precision + recall) if precision + recall > 0.0 else 0.0


@njit(cache=True, nogil=True)
def _score_pairs(
    pred_ids: np.ndarray,
    pred_off: np.ndarray,
    ref_ids: np.ndarray,
    ref_off: np.ndarray,
    id_bound: int,
    out: np.ndarray,
) -> None:  # pragma: no cover - compiled
    """All metrics of each pair k (token ids pred_ids[pred_off[k]:pred_off[k+1]] against the
    reference's, ids in [0, id_bound)) into out[k] (METRIC_NAMES order, zeros on entry)."""
    n_pairs = out.shape[0]
    longest = 1
    for k in range(n_pairs):
        longest = max(longest, pred_off[k + 1] - pred_off[k] + ref_off[k + 1] - ref_off[k])
    bits = 1
    while (1 << bits) < 2 * longest:
        bits += 1
    # scratch, allocated once per call (explicit loops instead of slice assignments: faster to compile)
    local = np.empty(id_bound, np.int64)
    for g in range(id_bound):
        local[g] = -1
    rank1 = np.empty(longest, np.int64)
    cur = np.empty(longest, np.int64)
    keys = np.empty(longest, np.int64)
    ranks = np.empty(longest, np.int64)
    count_p = np.zeros(longest, np.int64)
    count_r = np.zeros(longest, np.int64)
    table = np.empty((1 << bits, 2), np.int64)
    stamp = np.zeros(1 << bits, np.int64)
    calls = 0
    dp = np.empty(longest + 1, np.int64)
    overlaps = np.zeros(4, np.int64)

    for k in range(n_pairs):
        p0 = pred_off[k]
        r0 = ref_off[k]
        lp = pred_off[k + 1] - p0
        lr = ref_off[k + 1] - r0
        if lp == 0 or lr == 0:
            continue
        total = lp + lr
        # Order 1: dense local ids; prediction at 0..lp-1, reference at lp..total-1.
        n1 = 0
        for x in range(total):
            g = pred_ids[p0 + x] if x < lp else ref_ids[r0 + x - lp]
            if local[g] == -1:
                local[g] = n1
                n1 += 1
            rank1[x] = local[g]
        for x in range(total):  # reset
            g = pred_ids[p0 + x] if x < lp else ref_ids[r0 + x - lp]
            local[g] = -1
        # cur[x] = rank of the n-gram starting at x among all n-grams of both sides (an n-gram
        # never crosses the boundary). Order n ranks the pairs (rank of the (n-1)-gram at x,
        # rank of token x+n-1).
        for x in range(total):
            cur[x] = rank1[x]
        for n in range(4):
            overlaps[n] = 0
        for n in range(1, 5):
            if lp < n or lr < n:
                break
            kinds = n1
            if n > 1:
                j = 0
                for x in range(lp - n + 1):
                    keys[j] = cur[x] * n1 + rank1[x + n - 1]
                    j += 1
                for x in range(lp, total - n + 1):
                    keys[j] = cur[x] * n1 + rank1[x + n - 1]
                    j += 1
                calls += 1
                kinds = _rank_keys(keys, j, ranks, table, stamp, calls, bits)
                j = 0
                for x in range(lp - n + 1):
                    cur[x] = ranks[j]
                    j += 1
                for x in range(lp, total - n + 1):
                    cur[x] = ranks[j]
                    j += 1
            for g in range(kinds):
                count_p[g] = 0
                count_r[g] = 0
            for x in range(lp - n + 1):
                count_p[cur[x]] += 1
            for x in range(lp, total - n + 1):
                count_r[cur[x]] += 1
            ov = 0
            for g in range(kinds):
                ov += min(count_p[g], count_r[g])
            if ov == 0:
                break  # no n-gram match means no longer match either
            overlaps[n - 1] = ov
        _prf(overlaps[0], lp, lr, out, k, 0)
        _prf(overlaps[1], max(lp - 1, 0), max(lr - 1, 0), out, k, 3)
        if overlaps[0] == 0:
            continue  # LCS and every BLEU order are 0 too
        # LCS length: one DP row over the reference.
        for j in range(lr + 1):
            dp[j] = 0
        for i in range(lp):
            a = rank1[i]
            diag = 0
            for j in range(lr):
                up = dp[j + 1]
                if a == rank1[lp + j]:
                    dp[j + 1] = diag + 1
                elif dp[j] > up:
                    dp[j + 1] = dp[j]
                diag = up
        _prf(dp[lr], lp, lr, out, k, 6)
        bp = 1.0 if lp > lr else math.exp(1.0 - lr / lp)
        for n in range(1, 5):
            out[k, 8 + n] = bp * overlaps[n - 1] / max(lp - n + 1, 1)


def _flat_ids(
    token_lists: list[list[str]], vocab: dict[str, int], counter: Iterator[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of all lists end to end, and the offsets of each list. Equal tokens get equal ids
    (vocab.setdefault keeps the first id drawn from counter), so ids are exact, not hashes."""
    lengths = np.fromiter(map(len, token_lists), np.int64, count=len(token_lists))
    offsets = np.zeros(len(token_lists) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    ids = np.fromiter(
        map(vocab.setdefault, chain.from_iterable(token_lists), counter), np.int64, count=int(offsets[-1])
    )
    return ids, offsets


def _score_chunk(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    if len(predictions) <= PYTHON_PAIRS and not _score_pairs.signatures:
        return _score_chunk_python(predictions, references)
    vocab: dict[str, int] = {}
    counter = count()
    pred_ids, pred_off = _flat_ids([tokenize(t) for t in predictions], vocab, counter)
    ref_ids, ref_off = _flat_ids([tokenize(t) for t in references], vocab, counter)
    out = np.zeros((len(predictions), _N_METRICS), np.float64)
    _score_pairs(pred_ids, pred_off, ref_ids, ref_off, next(counter), out)
    return out


def _score_chunk_python(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """What the kernel computes, in Python: for a small batch while the kernel is not yet compiled in this
    process (a first run after an install compiles it in another process meanwhile, see kernels.py).
    Integer counts and the kernel's float expressions in the kernel's order: the same bits."""
    out = np.zeros((len(predictions), _N_METRICS), np.float64)
    for k, (prediction, reference) in enumerate(zip(predictions, references, strict=True)):
        out[k] = _score_pair_python(tokenize(prediction), tokenize(reference))
    return out


def _score_pair_python(pred: list[str], ref: list[str]) -> list[float]:
    row = [0.0] * _N_METRICS
    lp, lr = len(pred), len(ref)
    if lp == 0 or lr == 0:
        return row
    overlaps = [0, 0, 0, 0]
    for n in range(1, 5):
        if lp < n or lr < n:
            break
        ours = Counter(zip(*(pred[i:] for i in range(n)), strict=False))  # n-grams: shifted copies
        theirs = Counter(zip(*(ref[i:] for i in range(n)), strict=False))
        ov = sum(min(c, theirs[g]) for g, c in ours.items() if g in theirs)
        if ov == 0:
            break  # no n-gram match means no longer match either
        overlaps[n - 1] = ov
    _prf_python(overlaps[0], lp, lr, row, 0)
    _prf_python(overlaps[1], max(lp - 1, 0), max(lr - 1, 0), row, 3)
    if overlaps[0] == 0:
        return row
    _prf_python(_lcs_length(pred, ref), lp, lr, row, 6)
    bp = 1.0 if lp > lr else math.exp(1.0 - lr / lp)
    for n in range(1, 5):
        row[8 + n] = bp * overlaps[n - 1] / max(lp - n + 1, 1)
    return row


def _prf_python(overlap: int, n_pred: int, n_ref: int, row: list[float], at: int) -> None:
    recall = overlap / max(n_ref, 1)
    precision = overlap / max(n_pred, 1)
    row[at] = recall
    row[at + 1] = precision
    row[at + 2] = 2.0 * precision * recall / (precision + recall) if precision + recall > 0.0 else 0.0


def _lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel over b (Hyyro 2004): one big-integer
    step per token of a instead of len(b) Python steps."""
    match: dict[str, int] = {}
    for j, token in enumerate(b):
        match[token] = match.get(token, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full
    for token in a:
        u = v & match.get(token, 0)
        v = (v + u) | (v - u)
    return len(b) - (v & full).bit_count()


def load_kernel() -> None:
    """Load (or compile) the kernel into this process by scoring one tiny pair with it."""
    ids = np.zeros(1, np.int64)
    offsets = np.array([0, 1], np.int64)
    _score_pairs(ids, offsets, ids, offsets, 1, np.zeros((1, _N_METRICS), np.float64))


def _chunks(predictions: Sequence[str], references: Sequence[str]) -> Iterator[np.ndarray]:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; pair them up")
    preds, refs = iter(predictions), iter(references)
    while True:
        p = list(islice(preds, _CHUNK))
        if not p:
            return
        yield _score_chunk(p, list(islice(refs, _CHUNK)))


def sample_metrics(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L (R, P, F) and BLEU-1..4 of one prediction against its reference, in [0, 1]."""
    row = _score_chunk([prediction], [reference])[0]
    return dict(zip(METRIC_NAMES, row.tolist(), strict=True))


def sample_metrics_batch(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """Per-sample metrics of many pairs: a float64 array of shape (pairs, 13), columns METRIC_NAMES.

    Raises ValueError if the two sequences differ in length.
    """
    parts = list(_chunks(predictions, references))
    return np.concatenate(parts) if parts else np.zeros((0, _N_METRICS), np.float64)


def reference_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean of :func:`sample_metrics` over the pairs, by EvalScope's names.

    Returns an empty dict when there are no pairs (a mean of nothing is not 0).
    Raises ValueError if the two sequences differ in length.
    """
    sums = np.zeros(_N_METRICS, np.float64)
    count = 0
    for part in _chunks(predictions, references):
        sums += part.sum(axis=0)
        count += part.shape[0]
    if count == 0:
        return {}
    return dict(zip(METRIC_NAMES, (sums / count).tolist(), strict=True))
