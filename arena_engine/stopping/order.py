"""The seeded order in which an adaptive run walks its queries, stratified by (dataset, subset).

Within each subset the queries are shuffled by a generator seeded from the run's seed and the subset's
name; the subsets are then interleaved by each query's share of its subset (rank + 1/2) / size, so every
prefix of the order holds each subset in proportion to its size (to within one query). The order is a
function of the seed and the query keys alone: a resumed run, ``report`` and the benchmark walk the same.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

QueryKey = tuple[str, str, str]  # dataset, subset, query id


def stratified_order(keys: Sequence[QueryKey], seed: int) -> list[int]:
    """Positions into ``keys`` in the order the queries are to be judged."""
    strata: dict[tuple[str, str], list[int]] = {}
    for i, (dataset, subset, _) in enumerate(keys):
        strata.setdefault((dataset, subset), []).append(i)
    ranked: list[tuple[float, int, int]] = []
    for s_index, ((dataset, subset), members) in enumerate(strata.items()):
        rng = random.Random(f"arena-engine stop order\0{seed}\0{dataset}\0{subset}")
        shuffled = list(members)
        rng.shuffle(shuffled)
        n = len(shuffled)
        ranked.extend(((rank + 0.5) / n, s_index, pos) for rank, pos in enumerate(shuffled))
    ranked.sort()
    return [pos for _, _, pos in ranked]
