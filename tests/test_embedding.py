"""The library embedded in an async service: two arenas in one aiohttp app, one cancelled mid-run."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from arena_helpers import arena_config, dataset

from arena_engine.pipeline import Arena, ArenaResults, run_arena
from arena_engine.sim import Latency, SimConfig, SimModel, SimServer
from tests.fake_time import settle
from tests.waiting import wait_until_async

MODELS = ["m-base", "m-good", "m-bad"]


def _sim() -> SimConfig:
    return SimConfig(
        models=(SimModel("m-base", 0.0), SimModel("m-good", 0.9), SimModel("m-bad", -0.9),
                SimModel("sim-judge", judge=True)),
        seed=5, latency=Latency("lognormal", 0.03, 0.4),
    )


def _summary(r: ArenaResults) -> list[tuple[str, str, float, float, float]]:
    return [(b.scope.title, e.model, e.winrate, e.lower, e.upper) for b in r.boards for e in b.entries]


@pytest.mark.exclusive
def test_two_arenas_in_one_web_app_and_cancel_one(tmp_path: Path) -> None:
    data = dataset(tmp_path, 30)

    async def main() -> tuple[ArenaResults, ArenaResults, ArenaResults, list[float], int]:
        async with SimServer(_sim()) as sim:
            cfg_a = arena_config(sim.url, tmp_path / "a", data, MODELS)
            cfg_b = arena_config(sim.url, tmp_path / "b", data, MODELS[:2])

            app = web.Application()
            arenas: dict[str, asyncio.Task[ArenaResults]] = {}
            progress: dict[str, int] = {}

            async def health(_: web.Request) -> web.Response:
                return web.json_response({"ok": True, "progress": progress})

            app.router.add_get("/health", health)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]

            async def run_one(name: str, cfg: object) -> ArenaResults:
                # progress every 50 ms, so A is cancelled near 150 of its 420 steps, not after it ended
                async with Arena(cfg, progress_interval=0.05) as arena:  # type: ignore[arg-type]
                    async def watch() -> None:
                        async for ev in arena.events():
                            progress[name] = sum(s.done for s in ev.stages)
                    watcher = asyncio.create_task(watch())
                    try:
                        return await arena.run()
                    finally:
                        watcher.cancel()

            arenas["a"] = asyncio.create_task(run_one("a", cfg_a))
            arenas["b"] = asyncio.create_task(run_one("b", cfg_b))
            # the service stays responsive while both run; cancel A once it is well under way
            latencies = []
            async with aiohttp.ClientSession() as http:

                async def healthy_and_a_under_way() -> bool:  # a health check every 20 ms meanwhile
                    t0 = time.perf_counter()
                    async with http.get(f"http://127.0.0.1:{port}/health") as resp:
                        assert resp.status == 200
                    latencies.append(time.perf_counter() - t0)
                    return progress.get("a", 0) >= 150

                await wait_until_async(healthy_and_a_under_way, 120, "arena A to be well under way", interval=0.02)
            arenas["a"].cancel()
            try:
                await arenas["a"]
                raise AssertionError("arena A should have been cancelled")
            except asyncio.CancelledError:
                pass
            results_b = await arenas["b"]
            await runner.cleanup()
            partial = sim.stats()["per_model"].get("sim-judge", 0)
            # resume A, and run A's config uninterrupted elsewhere for comparison
            async with Arena(cfg_a) as arena:
                resumed_a = await arena.run()
            async with Arena(cfg_a.with_output_dir(tmp_path / "a-ref")) as arena:
                reference_a = await arena.run()
        return results_b, resumed_a, reference_a, latencies, partial

    results_b, resumed_a, reference_a, latencies, partial = asyncio.run(main())
    assert partial > 0
    # B finished correctly: every game judged, the better model ahead
    assert len(results_b.games) == 60 * 2 and all(g.outcome is not None for g in results_b.games)
    assert results_b.overall.entries[0].model == "m-good"
    # the cancelled arena resumed to exactly the uninterrupted results
    assert _summary(resumed_a) == _summary(reference_a)
    assert len(resumed_a.games) == len(reference_a.games) == 60 * 2 * 2
    # the event loop stayed responsive while two arenas ran in it (bounds allow for a loaded CI box)
    latencies.sort()
    assert latencies[len(latencies) // 2] < 0.3, f"median health check {latencies[len(latencies) // 2]:.3f} s"
    assert latencies[-1] < 2.0, f"health check took {latencies[-1]:.3f} s"


def test_sync_wrapper_for_scripts(tmp_path: Path) -> None:
    data = dataset(tmp_path, 8)

    async def serve_and_run() -> None:
        async with SimServer(_sim()) as sim:
            cfg = arena_config(sim.url, tmp_path / "run", data, MODELS[:2])
            # run_arena is for code without an event loop: call it from a worker thread here
            results = await asyncio.to_thread(run_arena, cfg)
            assert len(results.games) == 16 * 2
            assert results.overall.entry("m-base").winrate == 0.5

    asyncio.run(serve_and_run())


def test_a_task_cancelled_while_the_arena_closes_still_releases_the_folder(tmp_path: Path) -> None:
    """anyio's shield does not stop a native task.cancel(): the close must finish anyway."""
    data = dataset(tmp_path, 3)

    async def main() -> None:
        async with SimServer(_sim()) as sim:
            cfg = arena_config(sim.url, tmp_path / "a", data, MODELS)
            closing = asyncio.Event()
            closed = threading.Event()  # the slow close may finish
            loop = asyncio.get_running_loop()

            async def run_one() -> None:
                async with Arena(cfg) as arena:
                    await arena.run()
                    store = arena.store
                    real_close = store.close

                    def slow_close() -> None:  # runs in a thread
                        loop.call_soon_threadsafe(closing.set)
                        closed.wait(30)  # a close that takes its time (fsync on a slow disk)
                        real_close()

                    store.close = slow_close  # type: ignore[method-assign]

            task = asyncio.create_task(run_one())
            await closing.wait()
            task.cancel()  # lands while the store is being closed
            await settle()  # the task takes the cancellation while the close still runs
            closed.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            async with Arena(cfg) as again:  # the folder is free: no "in use by process"
                results = await again.run()
            assert all(g.outcome is not None for g in results.games)

    asyncio.run(main())
