"""Ends the processes of a local Ray cluster when the driver that started it dies (Linux).

``ray.init()`` without an address starts a cluster as the driver's children: gcs_server, raylet and a
few helpers, and under the raylet its two agents and the worker processes. Ray has the kernel kill the
driver's own children with it (``PR_SET_PDEATHSIG``), but the raylet's children only notice on their own:
after a SIGKILLed driver the workers went on for a second or two and the dashboard and runtime-env
agents stayed for over a minute, trying to reach the dead gcs_server.

So the driver starts this watchdog in a session of its own (a signal to the driver's process group does
not reach it): ``python -m arena_engine.distributed.reaper DRIVER_PID SESSION_DIR RAY_PACKAGE_DIR``. It waits for
the driver to end; then every process of that cluster gets SIGTERM, and SIGKILL if it is still there
:data:`GRACE` seconds later. A process is of the cluster if it is one of Ray's programs (an argument in
Ray's package folder) whose command line names the cluster's session folder (gcs_server, raylet, a
worker starting), or if it is titled ``ray::...`` (the raylet's agents and workers rename themselves,
overwriting their environment as they do) and holds a file open in that folder (their logs). Ray names
each session folder after the time and the starting process, so no other cluster's process matches, and
a user's ``tail -f`` of a log there is no Ray program. A driver that shuts its cluster down itself stops
the watchdog first (SIGTERM), and nothing is killed.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

#: How often the driver's pid is looked at (seconds).
POLL = 0.05
#: Seconds between SIGTERM and SIGKILL.
GRACE = 2.0
#: Sweeps at most: a later one ends what was being started while the first went through.
SWEEPS = 3

PROC = Path("/proc")


def start_time(pid: int) -> int | None:
    """The process's start time (clock ticks after boot), or None if it is gone or a zombie."""
    try:
        stat = (PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    fields = stat.rsplit(b")", 1)[-1].split()  # the command name (in parentheses) may hold spaces
    if len(fields) < 20 or fields[0] == b"Z":
        return None
    return int(fields[19])


def alive(pid: int, started: int | None) -> bool:
    """True while ``pid`` is the process that started at ``started`` and has not ended."""
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return start_time(pid) == started


def _holds_file_in(pid: int, folder: str) -> bool:
    fds = PROC / str(pid) / "fd"
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(fds / name).startswith(folder):
                return True
        except OSError:
            continue
    return False


def _names(cmdline: bytes, folder: bytes) -> bool:
    """True if an argument is ``folder`` or a path inside it (also as ``--flag=PATH``)."""
    return folder + b"/" in cmdline or folder + b"\0" in cmdline + b"\0"


def _is_ray_program(cmdline: bytes, ray_dir: bytes) -> bool:
    """True if an argument is a path inside Ray's package (its binaries and scripts)."""
    return any(arg.startswith(ray_dir + b"/") for arg in cmdline.split(b"\0"))


def cluster_processes(session_dir: str, ray_dir: str) -> dict[int, int]:
    """pid -> start time of every live process of the cluster whose session folder is ``session_dir``
    (``ray_dir``: the folder of the Ray package that runs it)."""
    folder = session_dir.rstrip("/")
    ray_bytes = ray_dir.rstrip("/").encode()
    found = {}
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        started = start_time(pid)
        if started is None:
            continue
        try:
            cmdline = (PROC / entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::"):
            ours = _holds_file_in(pid, folder + "/")
        else:
            ours = _names(cmdline, folder.encode()) and _is_ray_program(cmdline, ray_bytes)
        if ours:
            found[pid] = started
    return found


def _signal_all(procs: dict[int, int], sig: signal.Signals) -> None:
    for pid, started in procs.items():
        if alive(pid, started):
            try:
                os.kill(pid, sig)
            except OSError:
                pass


def reap(session_dir: str, ray_dir: str) -> int:
    """End the cluster's processes (SIGTERM, then SIGKILL after GRACE); returns how many there were."""
    seen: dict[int, int] = {}
    for _ in range(SWEEPS):
        procs = {p: s for p, s in cluster_processes(session_dir, ray_dir).items() if seen.get(p) != s}
        if not procs:
            break
        seen.update(procs)
        _signal_all(procs, signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        while time.monotonic() < deadline and any(alive(p, s) for p, s in procs.items()):
            time.sleep(POLL)
        _signal_all(procs, signal.SIGKILL)
    return len(seen)


def watch(driver_pid: int, session_dir: str, ray_dir: str) -> None:
    started = start_time(driver_pid)
    print(f"watching pid {driver_pid}", flush=True)  # the driver's start time is read (the tests wait for it)
    while alive(driver_pid, started):
        time.sleep(POLL)
    reap(session_dir, ray_dir)


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m arena_engine.distributed.reaper DRIVER_PID SESSION_DIR RAY_PACKAGE_DIR", file=sys.stderr)
        return 2
    watch(int(argv[0]), argv[1], argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
