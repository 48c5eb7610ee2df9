"""How a Ray worker notices that its driver is gone, and the watchdog that ends a dead driver's local
cluster: driven here without a cluster (a fake heartbeat, real processes standing in for Ray's)."""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from arena_engine.distributed import watch as distributed
from arena_engine.distributed.reaper import GRACE, start_time
from arena_engine.distributed.watch import DRIVER_TIMEOUT, HEARTBEAT_EVERY, LEASE_TICK, watch_driver
from arena_engine.limits import EndpointLimiter, Limits
from tests.fake_time import run_virtual
from tests.waiting import wait_until

ray = pytest.importorskip("ray")

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_pause_admits_nothing_until_it_ends_and_is_not_a_servers_hold() -> None:
    async def main() -> None:
        lim = EndpointLimiter(Limits(concurrency=4), clock=anyio.current_time)  # the loop's (virtual) clock
        lim.pause(0.3)
        assert lim.try_acquire() is None
        t0 = anyio.current_time()
        ticket = await lim.acquire()
        assert anyio.current_time() - t0 >= 0.29
        lim.release(ticket)
        assert lim.holds == 0  # not counted (nor shared through a lease) as a 429's hold
        assert lim.try_acquire() is not None

    run_virtual(main)


class FakeCoordinator:
    """A heartbeat that answers at once while ``answering``, else hangs until it answers again; or fails
    as a dead actor."""

    def __init__(self) -> None:
        self._answering = anyio.Event()
        self._answering.set()
        self.dead = False
        self.beats = 0

    @property
    def answering(self) -> bool:
        return self._answering.is_set()

    @answering.setter
    def answering(self, on: bool) -> None:
        if on:
            self._answering.set()
        elif self.answering:
            self._answering = anyio.Event()

    async def heartbeat(self) -> None:
        self.beats += 1
        await self._answering.wait()
        if self.dead:
            raise ray.exceptions.ActorDiedError()


async def _watch(coord: FakeCoordinator, script: list[tuple[float, Callable[[], None]]],
                 pauses: list[tuple[float, float]]) -> tuple[str, float]:
    """Run watch_driver on a virtual clock while ``script`` plays: each (seconds, change) makes the change
    that long after the one before. (reason, seconds after the script ended)."""
    ended: list[float] = []
    now = anyio.current_time
    loop = asyncio.get_running_loop()
    at = 0.0
    for seconds, change in script:
        at += seconds
        loop.call_later(at, change)  # on the loop's clock: virtual, see run_virtual
    loop.call_later(at, lambda: ended.append(now()))
    reason = await watch_driver(coord.heartbeat, lambda s: pauses.append((now(), s)), None, clock=now)
    return reason, now() - ended[0]


@pytest.mark.exclusive
def test_silent_driver_pauses_sending_and_a_reply_resumes_it_and_a_dead_one_stops_it() -> None:
    coord = FakeCoordinator()
    pauses: list[tuple[float, float]] = []
    marks: dict[str, float] = {}

    def mark(name: str, answering: bool, dead: bool = False) -> Callable[[], None]:
        def change() -> None:
            marks[name] = anyio.current_time()
            coord.answering = answering
            coord.dead = coord.dead or dead
        return change

    script = [
        (0.6, mark("silent", False)),  # answering for 0.6 s: no pause; then silent
        (1.5, mark("answers", True)),
        (0.6, mark("hangs", False, dead=True)),  # hang, then the actor turns out dead
        (0.1, mark("dead", True)),
    ]
    reason, late = run_virtual(_watch, coord, script, pauses)
    assert "died" in reason and late < 0.4, (reason, late)
    assert pauses, "a silent driver never paused the sending"
    first = pauses[0][0]
    assert first >= marks["silent"] + DRIVER_TIMEOUT - HEARTBEAT_EVERY - 0.01
    # sending stops within a second of the silence (the bar), and stays stopped while it lasts
    assert first <= marks["silent"] + DRIVER_TIMEOUT + LEASE_TICK + 0.1
    during = [(t, s) for t, s in pauses if t < marks["answers"]]
    assert all(b[0] <= a[0] + a[1] for a, b in itertools.pairwise(during)), "a gap in the pause"
    assert during[-1][0] + during[-1][1] >= marks["answers"] - 0.05
    # once it answers again (its next heartbeat) the pause lapses: nothing renews it
    assert all(t < marks["answers"] + HEARTBEAT_EVERY + 2 * LEASE_TICK + 0.1 for t, _ in pauses)
    assert coord.beats >= 6


@pytest.mark.exclusive
def test_a_driver_silent_for_good_is_given_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(distributed, "DRIVER_GIVE_UP", 1.2)
    coord = FakeCoordinator()
    pauses: list[tuple[float, float]] = []

    def script() -> None:
        coord.answering = False

    reason, late = run_virtual(_watch, coord, [(0.0, script)], pauses)
    assert "no answer" in reason and 1.1 < late < 1.6, (reason, late)
    assert pauses


@pytest.fixture
def sleeper() -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []

    def start(*argv: str, argv0: str | None = None, **kw: Any) -> subprocess.Popen[bytes]:
        """A process with ``argv`` that holds open the files named by arguments ``+PATH``."""
        code = "import signal, sys\nfiles = [open(a[1:], 'a') for a in sys.argv[1:] if a[:1] == '+']\nsignal.pause()"
        p = subprocess.Popen([argv0 or sys.executable, "-c", code, *argv], executable=sys.executable, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


@linux_only
@pytest.mark.exclusive
def test_a_worker_on_the_drivers_node_sees_the_driver_end(sleeper: Callable[..., subprocess.Popen[bytes]],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    driver = sleeper()
    looks = 0
    real_alive = distributed.alive
    polling: list[anyio.Event] = []

    def alive(pid: int, started: int | None) -> bool:
        nonlocal looks
        looks += 1
        if looks == 2:  # the first look is the check that it can see the pid; now it is polling
            polling[0].set()
        return real_alive(pid, started)

    monkeypatch.setattr(distributed, "alive", alive)

    async def main() -> tuple[str | None, float]:
        polling.append(anyio.Event())
        async with anyio.create_task_group() as tg:
            async def kill() -> None:
                await polling[0].wait()
                killed.append(time.monotonic())
                driver.kill()  # not waited for: a zombie counts as ended

            tg.start_soon(kill)
            with anyio.fail_after(5):
                reason = await distributed._watch_pid(driver.pid)
        return reason, time.monotonic() - killed[0]

    killed: list[float] = []
    reason, late = anyio.run(main)
    assert reason is not None and str(driver.pid) in reason and late < 0.3
    assert anyio.run(distributed._watch_pid, driver.pid) is None  # a pid it cannot see: no verdict


def _holds_file_in(pid: int, folder: Path) -> bool:
    fds = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd).startswith(f"{folder}/") for fd in fds.iterdir() if fd.is_symlink())


def _start_reaper(cmd: list[str]) -> subprocess.Popen[bytes]:
    """Start the watchdog and return once it watches the driver (it says so when it has read the driver's
    start time)."""
    reaper = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE)
    assert reaper.stdout is not None
    ready, _, _ = select.select([reaper.stdout], [], [], 30)
    line = reaper.stdout.readline() if ready else b""
    reaper.stdout.close()  # it says nothing more
    assert line.startswith(b"watching pid "), (line, reaper.poll())
    return reaper


@linux_only
def test_reaper_ends_the_dead_drivers_cluster_and_nothing_else(
        tmp_path: Path, sleeper: Callable[..., subprocess.Popen[bytes]]) -> None:
    session = tmp_path / "session_x"
    other = tmp_path / "session_x2"  # a name that starts like ours: another cluster's
    ray_dir = tmp_path / "site-packages" / "ray"  # the Ray package the cluster runs
    for d in (session, other):
        (d / "logs").mkdir(parents=True)
    # Ray's programs naming the session on their command line (gcs_server, raylet, a worker starting)
    named = sleeper(f"{ray_dir}/core/raylet", f"--log-dir={session}/logs")
    worker = sleeper(f"+{session}/logs/worker.out", argv0="ray::IDLE")  # renamed, its log open
    strangers = [
        sleeper(f"+{session}/logs/worker.out"),  # a user's tail -f of a log: no Ray program
        sleeper(f"+{other}/logs/worker.out", argv0="ray::IDLE"),  # another cluster's worker
        sleeper(f"{ray_dir}/core/raylet", f"--log-dir={other}/logs"),  # another cluster's raylet
    ]
    driver = sleeper()
    holders = [(worker, session), (strangers[0], session), (strangers[1], other)]
    wait_until(lambda: all(_holds_file_in(p.pid, d) for p, d in holders), 10, "the sleepers to open their logs")
    assert all(start_time(p.pid) is not None for p in [named, worker, *strangers])
    cmd = [sys.executable, "-m", "arena_engine.distributed.reaper", str(driver.pid), str(session), str(ray_dir)]

    # the driver shuts its cluster down itself and stops the watchdog first: nothing is killed
    reaper = _start_reaper(cmd)
    reaper.terminate()
    assert reaper.wait(timeout=5) == -signal.SIGTERM
    assert named.poll() is None and worker.poll() is None

    reaper = _start_reaper(cmd)
    try:
        killed_at = time.monotonic()
        os.kill(driver.pid, signal.SIGKILL)  # left a zombie: the watchdog must see through it
        assert reaper.wait(timeout=GRACE + 10) == 0
        assert named.wait(timeout=1) == -signal.SIGTERM and worker.wait(timeout=1) == -signal.SIGTERM
        assert time.monotonic() - killed_at < GRACE + 3
        assert all(p.poll() is None for p in strangers)
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()
