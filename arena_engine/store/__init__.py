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
- Opening a folder of 1M records takes well under a second with its sidecar index (only lines past the
  index are scanned and checksummed), and a few seconds without (``full_scan=True`` forces that). The
  index costs ~40 bytes of memory per record.
"""

from arena_engine.store.keys import content_key
from arena_engine.store.runstore import CHECKPOINT_DIR, CorruptLine, RunStore, TornTail

__all__ = ["CHECKPOINT_DIR", "CorruptLine", "RunStore", "TornTail", "content_key"]
