"""The simulated OpenAI-compatible endpoint that powers the demo, the tests and the benchmarks.

async with SimServer(SimConfig.demo()) as sim:
    ...  # point a client at sim.url; read sim.stats()
"""

from arena_engine.sim.answers import TAG_RE, candidate_answer, query_hash
from arena_engine.sim.config import Faults, Latency, SimConfig, SimModel
from arena_engine.sim.judging import LABELS, Judge, label_probabilities, tie_margin
from arena_engine.sim.ratelimit import SlidingWindowLimit
from arena_engine.sim.server import SimServer, make_app, serve
from arena_engine.sim.stats import SimStats

__all__ = [
    "LABELS",
    "TAG_RE",
    "Faults",
    "Judge",
    "Latency",
    "SimConfig",
    "SimModel",
    "SimServer",
    "SimStats",
    "SlidingWindowLimit",
    "candidate_answer",
    "label_probabilities",
    "make_app",
    "query_hash",
    "serve",
    "tie_margin",
]
