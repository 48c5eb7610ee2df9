"""The simulated OpenAI-compatible endpoint that powers the demo, the tests and the benchmarks.

    async with SimServer(SimConfig.demo()) as sim:
        ...  # point a client at sim.url ("http://127.0.0.1:PORT/v1"); read sim.stats()

Routes: GET /v1/models, POST /v1/chat/completions, GET /sim/stats (?times=1 adds arrival times),
POST /sim/reset. Stats keys: requests, per_model, status (HTTP codes as strings, plus "reset",
"hang_abandoned", "stall_abandoned", "client_gone"), faults (429, rpm_429, 500, 502, 503, reset, hang,
stall, trickle, malformed, no_choices, bad_verdict), in_flight, max_in_flight, distinct_bodies,
duplicate_requests, duplicate_200, retry_after_violations, endpoint_retry_after_violations,
first_request, last_request.
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
