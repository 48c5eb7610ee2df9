"""The simulator in a separate process, for benchmarks and kill tests that must not share a CPU or a
process with the client: ``with SimProcess(config) as sim: sim.url; sim.stats()``."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import asdict
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

from .config import SimConfig


def _config_dict(config: SimConfig) -> dict[str, Any]:
    data = asdict(config)
    data["models"] = [{k: v for k, v in m.items() if v is not None} for m in data["models"]]
    return data


class SimProcess:
    """Run ``arena-engine sim`` on a free 127.0.0.1 port in a child process."""

    def __init__(self, config: SimConfig, *, startup_timeout: float = 30.0) -> None:
        self.config = config
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self.url = ""

    def __enter__(self) -> SimProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="arena-sim-")
        cfg = Path(self._dir.name) / "sim.json"
        cfg.write_bytes(orjson.dumps(_config_dict(self.config)))
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "arena_engine.cli", "sim", "--port", "0", "--config", str(cfg)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        )
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline().decode().strip()
        if not line.startswith("http://"):
            self.__exit__(None, None, None)
            raise RuntimeError(f"the simulator did not start (first output: {line!r})")
        self.url = line
        return self

    def stats(self, *, times: bool = False) -> dict[str, Any]:
        base = self.url.removesuffix("/v1")
        with urllib.request.urlopen(f"{base}/sim/stats{'?times=1' if times else ''}", timeout=30) as r:
            data: dict[str, Any] = orjson.loads(r.read())
        return data

    def reset_stats(self) -> None:
        base = self.url.removesuffix("/v1")
        urllib.request.urlopen(urllib.request.Request(f"{base}/sim/reset", method="POST"), timeout=30).close()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stdout is not None:
                self._proc.stdout.close()
            self._proc = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
