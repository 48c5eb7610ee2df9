"""Which battles a query has: each candidate against the baseline, or (all_pairs) every pair of models,
at most ``max_pairs_per_query`` of them drawn per query from the seed (the same draw on every rerun)."""

from __future__ import annotations

import hashlib

import numpy as np

from .config import RunConfig
from .datasets import Query


def pairs_of(cfg: RunConfig, q: Query) -> list[tuple[str, str]]:
    """(candidate, opponent) names of the battles of ``q``."""
    if cfg.mode == "baseline":
        return [(m.name, cfg.baseline) for m in cfg.candidates]
    names = [m.name for m in cfg.models]
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    cap = cfg.max_pairs_per_query
    if cap is not None and len(pairs) > cap:
        digest = hashlib.blake2b(f"{cfg.seed}\0{q.dataset}\0{q.subset}\0{q.id}".encode(), digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        pairs = [pairs[i] for i in sorted(rng.choice(len(pairs), size=cap, replace=False))]
    return pairs
