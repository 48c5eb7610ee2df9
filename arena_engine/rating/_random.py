"""A tiny, fast counter-based generator (splitmix64) for the inner loops of the bootstrap.

numba's `np.random.randint` costs tens of nanoseconds a draw; the multinomial draws of a cluster
bootstrap need hundreds of millions of small uniform integers, so they use this instead. The state
is one uint64 in a 1-element array; seed it from the per-round seed.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

U64 = npt.NDArray[np.uint64]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def new_state(seed: int) -> U64:  # pragma: no cover - numba
    state = np.empty(1, np.uint64)
    state[0] = np.uint64(seed) * _MIX1 + _GOLDEN
    return state


@njit(cache=True, inline="always")
def next_u64(state: U64) -> np.uint64:  # pragma: no cover - numba
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def below(state: U64, n: int) -> int:  # pragma: no cover - numba
    """Uniform integer in [0, n) for 0 < n < 2**32 (multiply-shift; bias below n / 2**32)."""
    return int(((next_u64(state) >> np.uint64(32)) * np.uint64(n)) >> np.uint64(32))
