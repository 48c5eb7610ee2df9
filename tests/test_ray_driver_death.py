"""`arena-engine run CONFIG --backend ray` whose driver is SIGKILLed mid-run: the workers stop sending at
once (no more requests reach the server after the kill than were in flight at it), no process of the
local Ray cluster the run started is left 10 s later, and a cluster the run only joined lives on.

The run gets its own ``RAY_TMPDIR``: every process of its cluster names that folder on its command line
or holds a file open in it, which is how they are found here (other Ray clusters on the machine are never
looked at, let alone touched)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from arena_helpers import dataset
from interrupt_helpers import MAX_IN_FLIGHT, cli, output, sim_config, stop, wait_until, write_run_config

from arena_engine.sim.process import SimProcess

pytest.importorskip("ray")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the cluster's processes in /proc"),
]

QUERIES = 80
#: Median latency of every simulated request: long enough that the run is mid-way for seconds, and that
#: a worker going on for a second after the kill would send more than were in flight.
LATENCY = 1.0
START_TIMEOUT = 120.0  # Ray's start on a busy two-core machine
LEFTOVER_DEADLINE = 10.0


def cluster_processes(root: str) -> list[tuple[int, str]]:
    """(pid, command) of every live process whose command line names ``root`` or that holds a file in it."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        proc = f"/proc/{entry}"
        try:
            with open(f"{proc}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue  # a zombie has ended; only its parent's wait is missing
            with open(f"{proc}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            held = root in cmd
            if not held:
                for fd in os.listdir(f"{proc}/fd"):
                    try:
                        if os.readlink(f"{proc}/fd/{fd}").startswith(root):
                            held = True
                            break
                    except OSError:
                        continue
        except (OSError, IndexError):
            continue
        if held:
            found.append((int(entry), cmd[:80]))
    return found


@pytest.fixture
def ray_tmp(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    # short: Ray's unix socket paths live under it and must fit in 107 bytes
    root = tempfile.mkdtemp(prefix="arena-ray-")
    monkeypatch.setenv("RAY_TMPDIR", root)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield root
    for pid, _ in cluster_processes(root):  # a failed test leaves nothing running either
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    shutil.rmtree(root, ignore_errors=True)


def _arrivals_after(stats: dict, moment: float) -> int:
    return sum(t > moment for times in stats["times"].values() for t in times)


@dataclass
class Kill:
    in_flight: int  # requests the simulator was serving at the kill
    running: list[tuple[int, str]]  # Ray processes under the run's RAY_TMPDIR just before it
    sim: SimProcess
    killed_at: float

    def wait_out(self, seconds: float) -> None:
        """Return ``seconds`` after the kill. What must not happen (a request sent, a process killed) is
        seen not to happen only by letting the time pass in which it would have."""
        time.sleep(max(0.0, self.killed_at + seconds - time.time()))

    def arrived_after(self) -> int:
        """Requests that reached the simulator after the kill (once the workers had 2 s to send)."""
        self.wait_out(2.0)
        return _arrivals_after(self.sim.stats(times=True), self.killed_at)


@contextlib.contextmanager
def run_and_kill_driver(tmp_path: Path, ray_tmp: str) -> Iterator[Kill]:
    """``arena-engine run --backend ray --workers 2`` SIGKILLed once it is well under way."""
    data = dataset(tmp_path, QUERIES)
    with SimProcess(sim_config(latency=LATENCY)) as sim:
        config = write_run_config(tmp_path / "run.toml", sim.url, tmp_path / "ray-run", data)
        log = tmp_path / "ray"
        proc = cli("run", str(config), "--backend", "ray", "--workers", "2", "--quiet", log=log)
        try:
            def under_way() -> bool:  # both workers sending, the endpoints' slots mostly taken
                s = sim.stats()
                return proc.poll() is not None or (s["requests"] >= 60 and s["in_flight"] >= 20)

            wait_until(under_way, START_TIMEOUT, "the run to be well under way", interval=0.05)
            assert proc.poll() is None, output(log)
            running = cluster_processes(ray_tmp)
            before = sim.stats()
            killed_at = time.time()
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            yield Kill(before["in_flight"], running, sim, killed_at)
        finally:
            stop(proc)


def test_killed_ray_driver_stops_its_workers_and_leaves_no_process(tmp_path: Path, ray_tmp: str) -> None:
    with run_and_kill_driver(tmp_path, ray_tmp) as kill:
        assert len(kill.running) >= 4, kill.running  # gcs, raylet, two workers at least: the finder finds them
        left: list[tuple[int, str]] = []

        def gone() -> bool:
            left[:] = cluster_processes(ray_tmp)
            return not left

        try:
            wait_until(gone, kill.killed_at + LEFTOVER_DEADLINE - time.time(), "the cluster's processes to end",
                       interval=0.1)
        except AssertionError:
            pytest.fail(f"{len(left)} of the run's {len(kill.running)} Ray processes outlived it by "
                        f"{LEFTOVER_DEADLINE:g} s: {left}")
        ended_after = time.time() - kill.killed_at
        after = kill.arrived_after()
    print(f"\n{kill.in_flight} in flight at the kill, {after} arrived after it; "
          f"{len(kill.running)} Ray processes, all gone {ended_after:.1f} s after the kill")
    assert 0 < kill.in_flight <= MAX_IN_FLIGHT
    assert after <= kill.in_flight, (after, kill.in_flight)


def test_killed_driver_of_a_joined_cluster_stops_its_workers_and_leaves_the_cluster_alone(
        tmp_path: Path, ray_tmp: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # a cluster started by `ray start`, which `ray.init()` without an address joins: not the run's to end
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # the run reaches it without `ray start`'s token
    started = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "start", "--head", "--port=0", "--num-cpus=2",
         "--include-dashboard=false", "--disable-usage-stats"],
        capture_output=True, text=True, timeout=START_TIMEOUT)
    assert started.returncode == 0, started.stderr[-2000:]
    cluster = {pid for pid, _ in cluster_processes(ray_tmp)}
    assert len(cluster) >= 2, cluster  # gcs_server and raylet at least
    with run_and_kill_driver(tmp_path, ray_tmp) as kill:
        after = kill.arrived_after()
        kill.wait_out(5.0)  # a watchdog would have struck by now
        alive = {pid for pid, _ in cluster_processes(ray_tmp)}
    print(f"\n{kill.in_flight} in flight at the kill, {after} arrived after it; "
          f"{len(cluster & alive)} of the cluster's {len(cluster)} processes alive 5 s after")
    assert 0 < kill.in_flight <= MAX_IN_FLIGHT
    assert after <= kill.in_flight, (after, kill.in_flight)
    assert cluster <= alive, sorted(cluster - alive)
