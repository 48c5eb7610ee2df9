"""The built-in demo: a sample dataset, three simulated models and a simulated judge, end to end.

It starts the simulator in-process on 127.0.0.1, writes a `general_qa` dataset (an `arena` subset
without references and an `example` subset with references, like the seed), and runs the real arena
pipeline on it. Rerunning the demo on the same folder resumes: nothing already answered is requested
again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import orjson

from .config import RunConfig, config_from_dict
from .sim import Latency, SimConfig, SimModel

DEMO_MODELS = (("sim-base", 0.0), ("sim-strong", 1.0), ("sim-weak", -1.0))
DEMO_JUDGE = "sim-judge"

_TOPICS = (
    "time management", "stress", "Python and JavaScript", "working from home", "quantum computing",
    "photosynthesis", "the theory of relativity", "public speaking", "learning a language", "saving money",
    "sleep", "climate change", "machine learning", "healthy eating", "writing a resume", "negotiation",
)
_ASKS = (
    "How can I get better at {t}?", "What are the main ideas behind {t}?", "Explain {t} to a beginner.",
    "What are common mistakes people make with {t}?", "Give me three practical tips about {t}.",
)
_FACTS = (
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the largest mammal in the world?", "The largest mammal in the world is the blue whale."),
    ("How does photosynthesis work?", "Photosynthesis is the process by which green plants use sunlight to "
     "synthesize foods with the help of chlorophyll."),
    ("Who wrote 'To Kill a Mockingbird'?", "Harper Lee wrote 'To Kill a Mockingbird'."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius at sea level."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au."),
    ("How many continents are there?", "There are seven continents."),
    ("中国的首都是哪里?", "中国的首都是北京。"),
)


def demo_sim_config(*, seed: int = 0, latency: float = 0.01) -> SimConfig:
    """Three candidates of clearly different latent quality and one judge, lognormal latency."""
    models = tuple(SimModel(name, quality=q) for name, q in DEMO_MODELS) + (SimModel(DEMO_JUDGE, judge=True),)
    return SimConfig(models=models, seed=seed, latency=Latency("lognormal", latency, 0.5))


def write_demo_dataset(folder: Path, queries: int) -> Path:
    """Write `arena.jsonl` (no references) and `example.jsonl` (with references) of `queries` lines each."""
    folder.mkdir(parents=True, exist_ok=True)
    arena = []
    for i in range(queries):
        topic = _TOPICS[i % len(_TOPICS)]
        ask = _ASKS[(i // len(_TOPICS)) % len(_ASKS)]
        suffix = "" if i < len(_TOPICS) * len(_ASKS) else f" (variant {i})"
        arena.append({"query": ask.format(t=topic) + suffix})
    example = []
    for i in range(queries):
        q, a = _FACTS[i % len(_FACTS)]
        suffix = "" if i < len(_FACTS) else f" (#{i})"
        example.append({"query": q + suffix, "response": a})
    for name, rows in (("arena", arena), ("example", example)):
        data = b"".join(orjson.dumps(r) + b"\n" for r in rows)
        path = folder / f"{name}.jsonl"
        if not path.exists() or hashlib.sha256(path.read_bytes()).digest() != hashlib.sha256(data).digest():
            path.write_bytes(data)
    return folder


def demo_config(api_url: str, output: Path, data: Path, *, seed: int = 0, rounds: int = 1000) -> RunConfig:
    generation = {"temperature": 0.0, "max_tokens": 512}
    return config_from_dict(
        {
            "run": {"output_dir": str(output / "run"), "seed": seed},
            "datasets": [{"name": "general_qa", "path": str(data)}],
            "models": [
                # the simulator listens on a new port each run: the identity leaves the URL out so a rerun
                # of the demo resumes (see arena_engine.identity)
                {"name": name, "model": name, "api_url": api_url, "identity": name, "concurrency": 32,
                 "generation": generation}
                for name, _ in DEMO_MODELS
            ],
            "arena": {"baseline": DEMO_MODELS[0][0]},
            "judge": {"name": DEMO_JUDGE, "model": DEMO_JUDGE, "api_url": api_url, "identity": DEMO_JUDGE,
                      "concurrency": 64},
            "rating": {"rounds": rounds},
        },
        source="<demo>",
    )
