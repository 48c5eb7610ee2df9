"""Adaptive judging: stop sending a candidate's requests once its question is answered.

- :mod:`arena_engine.stop_rules` (beside config.py, which imports it, and not here, since this package
  stands above the config): the config (``[arena.stop]``) and the stopping rules;
- :mod:`.cs`: the anytime-valid confidence sequence for a win rate with the query as the unit;
- :mod:`.order`: the seeded order of the queries, stratified by subset;
- :mod:`.schedule`: the blocks of that order and the decisions taken on completed prefixes;
- :mod:`.hook`: what the pipeline calls (which models and battles a query has, what its games scored).
"""
