"""benchmarks/soak.py's split of the simulator's duplicate 200s: a 200 the client timed out on (it never
took the answer, so it sent the body again) is counted apart from a 200 paid twice for an answer the
client had."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


@pytest.fixture(scope="module")
def soak() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
    spec = importlib.util.spec_from_file_location("soak_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def stats(dup: int, **status: int) -> dict[str, object]:
    return {"duplicate_200": dup, "status": {"200": 1000, **status}}


def test_duplicates_after_client_timeouts_on_finished_answers_are_not_received(soak: ModuleType) -> None:
    # 12 read timeouts: 10 hangs the simulator abandoned, 2 on answers it had sent -> both duplicates explained
    assert soak.split_duplicate_200(stats(2, hang_abandoned=10), 12) == (0, 2)


def test_duplicates_beyond_the_timeouts_on_finished_answers_are_paid_twice(soak: ModuleType) -> None:
    # every timeout is a hang or a handler the client left: nothing the simulator finished was missed
    assert soak.split_duplicate_200(stats(3, hang_abandoned=8, client_gone=2), 10) == (3, 0)
    assert soak.split_duplicate_200(stats(3, hang_abandoned=8, stall_abandoned=1), 10) == (2, 1)


def test_no_duplicates_means_nothing_to_explain(soak: ModuleType) -> None:
    assert soak.split_duplicate_200(stats(0), 50) == (0, 0)
