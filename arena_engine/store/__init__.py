"""Append-only, crash-safe checkpoints of a run folder.

A run folder looks like::

    run_dir/.lock                        flock'ed by the one process writing the folder (holds its pid)
    run_dir/checkpoints/<kind>.jsonl     one record per line (the data; see ``frame``)
    run_dir/checkpoints/<kind>.idx       sidecar index of that file (a cache; see ``sidecar``)

Guarantees:

- ``put`` writes the whole line to the OS with one ``write`` before it returns, so a killed process
  loses nothing it was told was stored; ``fsync`` is batched on a background thread (``fsync_interval``
  seconds / ``fsync_every`` records), bounding what a power loss can take.
- A torn last line (an interrupted write, never acknowledged) is truncated on open with a logged
  warning; if it is a whole record lacking only its newline, the newline is added instead.
- A damaged line elsewhere is logged with ``file:line`` and skipped. A valid record glued after garbage
  on the same line is kept. If the damaged line's key can be read, the warning names the key and says
  its request will be sent again: its result cannot be read, so it is neither used nor forgotten
  silently. Those keys are listed by ``RunStore.unreadable(kind)`` and in ``RunStore.corrupt_lines``.
- Opening reads the sidecar index and scans (and checksums) only the lines written after it, which is
  where a crash leaves its damage: 1M records open in about a second, in ~40 bytes of memory per
  record. Lines the sidecar covers are checksummed when read (``get``, ``items``, ``records``); a line
  damaged since it was indexed (disk fault, hand edit) is then reported with ``file:line`` like above,
  its key is forgotten so the request is sent again, and the sidecar is emptied so the next open
  rescans the whole file. Without a usable sidecar, or with ``full_scan=True``, open scans everything.
  So ``has`` answers from the index, and ``get`` is the call that proves a result is readable: use
  ``get(...) is None`` to decide whether to send a request whose result you need.
- Every 65536 puts, recent keys are merged into the numpy index; at 1M records that merge blocks
  the caller for a fraction of a second (benchmarks/README.md, *Figures behind design choices*).
"""

from arena_engine.store.keys import content_key
from arena_engine.store.repair import CorruptLine, TornTail
from arena_engine.store.runstore import CHECKPOINT_DIR, RunStore

__all__ = ["CHECKPOINT_DIR", "CorruptLine", "RunStore", "TornTail", "content_key"]
