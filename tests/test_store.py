"""RunStore: round trip, reuse across reopen, repair of damaged files, locking, fsync batching."""

from __future__ import annotations

from pathlib import Path

from arena_engine.store import RunStore, content_key


def test_put_get_round_trip_and_reuse_after_reopen(tmp_path: Path) -> None:
    recs = {content_key({"q": i}): {"q": i, "answer": f"answer {i} </script> é 😀"} for i in range(50)}
    with RunStore(tmp_path) as store:
        for key, rec in recs.items():
            store.put("generations", key, rec)
        assert store.get("generations", next(iter(recs))) == recs[next(iter(recs))]
    with RunStore(tmp_path) as store:
        assert store.count("generations") == 50
        assert all(store.has("generations", k) for k in recs)
        assert list(store.records("generations")) == list(recs.values())
