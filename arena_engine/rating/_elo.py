"""Legacy online Elo (method "elo-online") over games in shuffled orders (numba kernels).

Online Elo is not a fit: its ratings depend on the order of the games and, with a small K, stay
pulled towards the start value on small data, so bootstrap percentiles of it are not confidence
intervals (see docs/rating.md). method "elo" is the Bradley-Terry fit shown on the Elo scale.

Each game counts `w` times (a strong verdict `strong_weight` times), each copy a separate update, as
in Arena-Hard's expanded rows. Update: r_a += K (s_a - e_a), r_b -= K (s_a - e_a), e_a = 1 / (1 +
10^((r_b - r_a) / 400)).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from arena_engine.rating._random import below, new_state

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

_LN10_400 = math.log(10.0) / 400.0


_BITS = 21  # a unit packs (a, b, 2 s_a) as a | b << 21 | 2 s_a << 42: k < 2^21 models
_MASK = (1 << _BITS) - 1
MAX_MODELS = _MASK + 1


@njit(cache=True, inline="always")
def _codes(i: I64, j: I64, s2: I64, w: I64) -> I64:  # pragma: no cover - numba
    """Per game its packed update (i, j, 2 s_i): a run reads one shuffled array in order, instead of
    four game arrays at shuffled positions (cache misses were most of its time)."""
    out = np.empty(i.size, np.int64)
    for g in range(i.size):
        out[g] = i[g] | (j[g] << _BITS) | ((s2[g] // w[g]) << (2 * _BITS))
    return out


@njit(cache=True, inline="always")
def _expand(order: I64, w: I64, code: I64) -> I64:  # pragma: no cover - numba
    total = 0
    for g in order:
        total += w[g]
    out = np.empty(total, np.int64)
    pos = 0
    for g in order:
        for _ in range(w[g]):
            out[pos] = code[g]
            pos += 1
    return out


@njit(cache=True, inline="always")
def _shuffle(x: I64, state: npt.NDArray[np.uint64]) -> None:  # pragma: no cover - numba
    """Fisher-Yates with the splitmix stream `state`."""
    for t in range(x.size - 1, 0, -1):
        u = below(state, t + 1)
        tmp = x[t]
        x[t] = x[u]
        x[u] = tmp


@njit(cache=True, inline="always")
def _run_packed(units: I64, k: int, base: int, k_factor: float) -> F64:  # pragma: no cover - numba
    """Elo over packed updates (see _codes), in the order given."""
    r = np.full(k, 1000.0)
    for u in units:
        a = u & _MASK
        b = (u >> _BITS) & _MASK
        sa = 0.5 * (u >> (2 * _BITS))  # s2 / w is 0, 1 or 2: the same bits as 0.5 * s2 / w
        ea = 1.0 / (1.0 + math.exp((r[b] - r[a]) * _LN10_400))  # 10^((r_b - r_a) / 400), faster
        delta = k_factor * (sa - ea)
        r[a] += delta
        r[b] -= delta
    shift = 1000.0 - r[base]
    for m in range(k):
        r[m] += shift
    return r


@njit(cache=True)
def _run(units: I64, i: I64, j: I64, s2: I64, w: I64, k: int, base: int, k_factor: float) -> F64:  # pragma: no cover
    """Elo over games `units` (indices into i, j, s2, w), in that order."""
    code = _codes(i, j, s2, w)
    packed = np.empty(units.size, np.int64)
    for t in range(units.size):
        packed[t] = code[units[t]]
    return _run_packed(packed, k, base, k_factor)


@njit(cache=True)
def elo_point(
    canon: I64, i: I64, j: I64, s2: I64, w: I64, k: int, base: int, k_factor: float, seed: np.uint32
) -> F64:  # pragma: no cover - numba
    """Elo over all games (in canonical order `canon`) shuffled with `seed`."""
    units = _expand(canon, w, _codes(i, j, s2, w))
    _shuffle(units, new_state(int(seed)))
    return _run_packed(units, k, base, k_factor)


@njit(cache=True)
def elo_mean(
    canon: I64, i: I64, j: I64, s2: I64, w: I64, k: int, base: int, k_factor: float, seeds: npt.NDArray[np.uint32]
) -> F64:  # pragma: no cover - numba
    """Mean of Elo over all games (canonical order `canon`) shuffled once per seed: online Elo's point
    depends on the order of the games; averaging many orders makes it (nearly) a function of the data."""
    units = _expand(canon, w, _codes(i, j, s2, w))
    total = np.zeros(k)
    for t in range(seeds.size):
        _shuffle(units, new_state(seeds[t]))
        r = _run_packed(units, k, base, k_factor)
        for m in range(k):
            total[m] += r[m]
    return total / max(seeds.size, 1)


@njit(cache=True, nogil=True)
def elo_bootstrap(
    ptr: I64, canon: I64, i: I64, j: I64, s2: I64, w: I64, k: int, base: int, k_factor: float,
    seeds: npt.NDArray[np.uint32],
) -> F64:  # pragma: no cover - numba
    """Per round: clusters drawn with replacement, their games shuffled, Elo run; rows = rounds.
    `canon[ptr[c]:ptr[c+1]]` are the games of cluster c in canonical order."""
    n_clusters = ptr.size - 1
    out = np.empty((seeds.size, k))
    counts = np.zeros(n_clusters, np.int64)
    code = _codes(i, j, s2, w)
    for r in range(seeds.size):
        state = new_state(seeds[r])
        for c in range(n_clusters):
            counts[c] = 0
        for _ in range(n_clusters):
            counts[below(state, n_clusters)] += 1
        total = 0
        for c in range(n_clusters):
            for t in range(ptr[c], ptr[c + 1]):
                total += counts[c] * w[canon[t]]
        units = np.empty(total, np.int64)
        pos = 0
        for c in range(n_clusters):
            for _ in range(counts[c]):
                for t in range(ptr[c], ptr[c + 1]):
                    g = canon[t]
                    for _ in range(w[g]):
                        units[pos] = code[g]
                        pos += 1
        _shuffle(units, state)
        ratings = _run_packed(units, k, base, k_factor)
        for m in range(k):
            out[r, m] = ratings[m]
    return out
