"""Simulator config: files (TOML, JSON), validation errors that name the file and key, the demo config,
and the sync bookkeeping (stats, RPM window) driven by a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from arena_engine.errors import ConfigError
from arena_engine.sim import Faults, Latency, SimConfig, SimModel, SimStats, SlidingWindowLimit

TOML = """
seed = 7
rpm_limit = 120
verdict_format = "mixed"
latency = { kind = "lognormal", seconds = 0.05, sigma = 0.3 }

[faults]
rate_429 = 0.1
retry_after = "ms"
rate_503 = 0.05

[[models]]
name = "cand-a"
quality = 1.0
latency = 0.2

[[models]]
name = "judge"
judge = true
"""


def test_from_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.toml"
    path.write_text(TOML)
    cfg = SimConfig.from_file(path)
    assert cfg.seed == 7 and cfg.rpm_limit == 120 and cfg.verdict_format == "mixed"
    assert cfg.latency == Latency("lognormal", 0.05, 0.3)
    assert cfg.faults == Faults(rate_429=0.1, retry_after="ms", rate_503=0.05)
    assert cfg.models == (
        SimModel("cand-a", 1.0, latency=Latency("fixed", 0.2)),
        SimModel("judge", judge=True),
    )


def test_from_json_file(tmp_path: Path) -> None:
    path = tmp_path / "sim.json"
    path.write_text('{"models": [{"name": "m", "quality": -0.5}], "faults": {"rate_reset": 0.02}}')
    cfg = SimConfig.from_file(path)
    assert cfg.models == (SimModel("m", -0.5),) and cfg.faults.rate_reset == 0.02


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ('[[models]]\nname = "m"\ncolour = "red"\n', "models[0]: unknown key(s) ['colour']"),
        ('spead = 1\n[[models]]\nname = "m"\n', "unknown key(s) ['spead']"),
        ("seed = 1\n", "'models' is missing"),
        ("[[models]]\nquality = 1\n", "models[0]: key 'name' is missing"),
        ('[[models]]\nname = "m"\nquality = "high"\n', "quality must be a finite number"),
        ('[faults]\nrate_500 = 1.5\n[[models]]\nname = "m"\n', "faults.rate_500 must be <= 1"),
        ('[faults]\nrate_500 = 0.6\nrate_503 = 0.6\n[[models]]\nname = "m"\n', "sum to 1.2"),
        ('[faults]\nretry_after = "minutes"\n[[models]]\nname = "m"\n', "faults.retry_after must be one of"),
        ('latency = { kind = "gamma" }\n[[models]]\nname = "m"\n', "latency.kind must be"),
        ('verdict_format = "xml"\n[[models]]\nname = "m"\n', "verdict_format must be"),
        ('[[models]]\nname = "m"\n[[models]]\nname = "m"\n', "duplicate model names ['m']"),
        ('rpm_limit = 0\n[[models]]\nname = "m"\n', "rpm_limit must be > 0"),
        ("models = [", "not valid TOML"),
    ],
)
def test_bad_configs_name_the_file_and_the_key(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        SimConfig.from_file(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    assert needle in message, message


def test_missing_file_and_bad_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        SimConfig.from_file(tmp_path / "nope.toml")
    path = tmp_path / "x.json"
    path.write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        SimConfig.from_file(path)


def test_demo_has_three_candidates_of_distinct_quality_and_one_judge() -> None:
    cfg = SimConfig.demo()
    candidates = [m for m in cfg.models if not m.judge]
    judges = [m for m in cfg.models if m.judge]
    assert len(candidates) == 3 and len(judges) == 1
    qualities = sorted(m.quality for m in candidates)
    assert qualities[1] - qualities[0] >= 1.0 and qualities[2] - qualities[1] >= 1.0


def test_model_names_cannot_break_the_tag() -> None:
    for bad in ("", "has space", "a]b"):
        with pytest.raises(ConfigError):
            SimModel(bad)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_sliding_window_admits_capacity_per_window_and_states_the_exact_wait() -> None:
    limit = SlidingWindowLimit(60.0)  # one per second on average, 60 per sliding minute
    assert (limit.capacity, limit.window) == (60, 60.0)
    for i in range(60):
        assert limit.try_admit(i * 0.5) == 0.0
    assert limit.try_admit(30.0) == pytest.approx(30.0)  # the first slot frees at t = 60
    assert limit.try_admit(59.9) == pytest.approx(0.1)
    assert limit.try_admit(60.0) == 0.0
    assert limit.try_admit(60.1) == pytest.approx(0.4)  # next frees when t=0.5 leaves the window


def test_sliding_window_fractional_and_short_windows() -> None:
    half = SlidingWindowLimit(0.5)  # one every two minutes
    assert (half.capacity, half.window) == (1, 120.0)
    assert half.try_admit(0.0) == 0.0 and half.try_admit(1.0) == pytest.approx(119.0)
    fast = SlidingWindowLimit(600.0, window_s=1.0)
    assert (fast.capacity, fast.window) == (10, 1.0)
    odd = SlidingWindowLimit(90.0, window_s=1.0)  # 1.5 per second: 1 per 2/3 s
    assert odd.capacity == 1 and odd.window == pytest.approx(2 / 3)


def test_stats_retry_after_bookkeeping_with_a_fake_clock() -> None:
    clock = FakeClock()
    stats = SimStats(grace=0.02, clock=clock, wall=clock)
    assert stats.arrive("m", 1) == 0
    stats.told_to_wait(1, 1.0)
    stats.done(1, "429")
    clock.now += 0.01  # another body inside the grace: in flight when the 429 left, not a violation
    assert stats.arrive("m", 2) == 0
    stats.done(2, "200")
    clock.now += 0.5  # same body early: both counters
    assert stats.arrive("m", 1) == 1
    stats.done(1, "200")
    assert (stats.retry_after_violations, stats.endpoint_retry_after_violations) == (1, 1)
    clock.now += 0.6  # the wait is over
    assert stats.arrive("m", 1) == 2
    stats.done(1, "200")
    snap = stats.snapshot(times=True)
    assert (snap["retry_after_violations"], snap["endpoint_retry_after_violations"]) == (1, 1)
    assert snap["duplicate_200"] == 1 and snap["duplicate_requests"] == 2
    assert stats.body_counts(1) == (3, 2) and stats.body_counts(2) == (1, 1)
    assert snap["times"]["m"] == [100.0, 100.01, 100.51, 101.11]
    assert snap["status"] == {"429": 1, "200": 3} and snap["in_flight"] == 0 and snap["max_in_flight"] == 1


def test_stats_forget_expired_waits_so_memory_stays_bounded() -> None:
    clock = FakeClock()
    stats = SimStats(clock=clock, wall=clock)
    for key in range(5000):
        stats.arrive("m", key)
        stats.told_to_wait(key, 0.5)
        stats.done(key, "429")
        clock.now += 0.01
    assert len(stats._not_before) < 1100
    assert len(stats._blocks) <= 60


def test_stats_without_body_tracking_still_count_arrivals() -> None:
    stats = SimStats(track_bodies=False)
    assert [stats.arrive("m", 9) for _ in range(3)] == [0, 1, 2]
    for _ in range(3):
        stats.done(9, "200")
    snap = stats.snapshot()
    assert snap["requests"] == 3 and snap["distinct_bodies"] == 0 and snap["duplicate_200"] == 0


def test_stats_count_answered_bodies_once_and_describe_each_duplicate_200() -> None:
    # a soak's "lost" is answered bodies minus stored records: a body answered twice must count once there,
    # and its second 200 shows as a duplicate with the times that tell a re-send after a client timeout apart
    clock = FakeClock()
    stats = SimStats(clock=clock, wall=clock)
    stats.arrive("m", 1)
    stats.done(1, "200", usable=False)  # broken on purpose: not an answer
    stats.arrive("m", 1)
    stats.done(1, "200")
    clock.now += 1.0
    stats.arrive("m", 1)  # sent again after the client's 1 s read timeout
    clock.now += 0.005
    stats.done(1, "200")
    stats.arrive("m", 2)
    stats.done(2, "200")
    snap = stats.snapshot()
    assert snap["answered_bodies"] == 2 and snap["duplicate_200"] == 1
    (entry,) = snap["duplicate_200_log"]
    assert entry["body"] == f"{1:016x}"
    assert (entry["answered"], entry["resent"], entry["answered_again"]) == (100.0, 101.0, 101.005)
    stats.reset()
    assert stats.snapshot()["answered_bodies"] == 0 and stats.snapshot()["duplicate_200_log"] == []
