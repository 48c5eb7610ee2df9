"""A sending run: :class:`Arena` (async) and :func:`run_arena` (sync). See ``arena.py``."""

from .arena import Arena, loop_options, run_arena

__all__ = ["Arena", "loop_options", "run_arena"]
