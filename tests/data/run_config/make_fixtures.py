"""Writes tests/data/run_config/*.json with the run folder's save_config as of commit 1caeffd."""
import sys
from pathlib import Path

from arena_engine.config import config_from_dict
from arena_engine.runfolder import save_config

root = Path(sys.argv[1]).resolve()
(root / "labels.jsonl").write_text('{"query_id": "1", "model_a": "cand", "model_b": "base", "winner": "tie"}\n')
(root / "judge_system.txt").write_text("Be strict.\n")
(root / "tmpl.txt").write_text("Q {question}\nA {answer_a}\nB {answer_b}\nR {reference}\n")
panel = {
    "run": {"output_dir": "out/panel", "seed": 11, "fsync_interval": 2.5},
    "datasets": [{"path": "data/qa"}, {"name": "math", "path": "data/math", "subsets": ["easy", "hard"], "allow_empty": True}],
    "models": [
        {"name": "base", "api_url": "https://api.example/v1/chat/completions", "model": "base-instruct",
         "api_key_env": "BASE_KEY", "concurrency": 16, "rpm": 600, "tpm": 200000, "adaptive_concurrency": False,
         "max_attempts": 3, "retry_max_time": 120, "connect_timeout": 5, "read_timeout": 60, "timeout": 600,
         "extra_headers": {"api-key": {"env": "AZURE_KEY"}, "x-team": "evals"},
         "query_params": {"api-version": "2024-10-21", "n": 3},
         "extra_body": {"chat_template_kwargs": {"enable_thinking": False}},
         "generation": {"temperature": 0.0, "max_tokens": 256}, "price_in": 0.3, "price_out": 0.6,
         "identity": "base @ https://old.example/v1", "system_prompt": "Answer briefly."},
        {"name": "cand", "api_url": "https://api.anthropic.com/v1", "mode": "batch",
         "batch": {"protocol": "anthropic", "max_requests": 1000, "poll_interval": 5, "discount": 0.4,
                   "resubmits": 0, "max_wait": 60, "max_bytes": 4096, "completion_window": "24h"},
         "generation": {"max_tokens": 512}, "system_prompt": "Be terse.", "system_prompt_combine": "replace"},
        {"name": "cand-again", "api_url": "https://api.anthropic.com/v1", "model": "cand",
         "generation": {"max_tokens": 512}, "system_prompt": "Be terse.", "system_prompt_combine": "replace",
         "reuse_answers_of": "cand"},
        {"name": "imported", "evalscope_report": "reports/imported", "evalscope_mismatch": "warn"},
    ],
    "arena": {"baseline": "base", "stop": {"rule": "decided", "margin": 0.01, "confidence": 0.9,
                                           "min_queries": 20, "block": 10}},
    "judges": [
        {"name": "cheap", "api_url": "http://127.0.0.1:9/v1", "related_to": ["cand"], "parse_retries": 0,
         "structured_output": True, "price_in": 0.1, "price_out": 0.2, "system_prompt_file": "judge_system.txt"},
        {"name": "strong", "api_url": "http://127.0.0.1:9/v1", "template_file": "tmpl.txt",
         "generation": {"temperature": 0.2}, "identity": "strong @ old", "mode": "batch"},
    ],
    "panel": {"cascade": ["cheap", "strong"], "calibration": 0.25, "human_labels": "labels.jsonl"},
    "rating": {"method": "elo", "interval": "bootstrap", "ci": 0.9, "rounds": 200, "strong_weight": 1,
               "overall": "evalscope"},
}
single = {
    "run": {"mode": "all_pairs", "max_pairs_per_query": 2, "queries_in_flight": 64},
    "datasets": [{"name": "qa", "path": "/data/qa"}],
    "models": [{"name": "a", "api_url": "http://x/v1"}, {"name": "b", "api_url": "http://x/v1"},
               {"name": "c", "api_url": "http://x/v1", "price_in": 0}],
    "judge": {"name": "j", "api_url": "http://x/v1", "template": "{question}|{answer_a}|{answer_b}",
              "system_prompt": "Judge."},
    "rating": {"method": "elo-online"},
}
plain = {"datasets": [{"path": "d"}], "models": [{"name": "a", "api_url": "http://x/v1"}, {"name": "b", "api_url": "http://x/v1"}],
         "judge": {"name": "j", "api_url": "http://x/v1"}, "arena": {"stop": {"halfwidth": 0.05}}}
multi = {"datasets": [{"path": "d"}], "models": [{"name": "a", "api_url": "http://x/v1"}, {"name": "b", "api_url": "http://x/v1"}],
         "judges": [{"name": "j1", "api_url": "http://x/v1"}, {"name": "j2", "api_url": "http://y/v1"}],
         "panel": {"combine": "majority"}}
out = Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for name, data in (("panel", panel), ("single", single), ("stop_halfwidth", plain), ("majority", multi)):
    cfg = config_from_dict(data, source=name, base_dir=root)
    save_config(cfg, root / name)
    text = (root / name / "config.json").read_text().replace(str(root), "@ROOT@")
    (out / f"{name}.json").write_text(text)
