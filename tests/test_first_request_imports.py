"""`arena-engine run` sends its first request before it imports what only the results need (issue 21).

numba, the rating and leaderboard modules, the reference metrics and the report writers cost a few
hundred ms to import and load; they are loaded in a background thread once the first request is on
its way. A child process runs the CLI with a hook on `ChatClient.chat` that writes down, at the first
request, which of those modules are loaded, and again when the process ends (they must be loaded by
then: the run rated its games and wrote its reports, so the hook saw a real run).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
from arena_helpers import write_small_demo_config

from arena_engine.demo import demo_sim_config, write_demo_dataset
from arena_engine.sim.process import SimProcess

RESULTS_ONLY = ("numba", "arena_engine.rating", "arena_engine.leaderboard", "arena_engine.metrics",
                "arena_engine.report", "arena_engine.report.html", "arena_engine.evalscope_import")

HOOK = """
import sys, orjson
from arena_engine import client
from arena_engine.cli import main

WATCH = tuple(sys.argv[3].split(","))
seen = {}
chat = client.ChatClient.chat

async def first_chat(self, *args, **kwargs):
    if "first" not in seen:
        seen["first"] = sorted(m for m in WATCH if m in sys.modules)
    return await chat(self, *args, **kwargs)

client.ChatClient.chat = first_chat
code = main(["run", sys.argv[1], "--quiet"])
seen["end"] = sorted(m for m in WATCH if m in sys.modules)
seen["code"] = code
open(sys.argv[2], "wb").write(orjson.dumps(seen))
"""


def test_the_first_request_goes_out_before_the_results_modules_are_imported(tmp_path: Path) -> None:
    data = write_demo_dataset(tmp_path / "data" / "general_qa", 3)
    out = tmp_path / "seen.json"
    with SimProcess(demo_sim_config(latency=0.005)) as sim:
        path = write_small_demo_config(tmp_path / "config.json", sim.url, tmp_path / "run", data)
        proc = subprocess.run([sys.executable, "-c", HOOK, str(path), str(out), ",".join(RESULTS_ONLY)],
                              capture_output=True, timeout=120)
        assert sim.stats()["requests"] > 0
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    seen = orjson.loads(out.read_bytes())
    assert seen["code"] == 0
    assert seen["first"] == [], f"imported before the first request: {seen['first']}"
    # the same process did load them, for the results: the hook watched a whole run
    assert {"numba", "arena_engine.rating", "arena_engine.leaderboard", "arena_engine.metrics",
            "arena_engine.report"} <= set(seen["end"]), seen["end"]
