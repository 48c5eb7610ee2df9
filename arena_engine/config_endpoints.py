"""Reading an endpoint's keys (each `[[models]]`, `[judge]` and `[[judges]]` table) into an `Endpoint`.

The plain keys (model, limits, retries, timeouts) are read by their fields (`config_reader.values`);
the URL, the headers and query parameters (no secrets as text), the body and the batch table here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from .batch_options import BatchOptions
from .config_fields import spec
from .config_reader import Reader, values
from .endpoint_config import AUTO_MAX, Endpoint, EnvVar, Limits, RetryPolicy, Timeouts
from .errors import ConfigError

__all__ = ["endpoint", "needs_budget"]


def _api_url(r: Reader) -> str:
    api_url: str = r.get("api_url", str, required=True).rstrip("/")
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"{r.source}: '{r.where('api_url')}' must start with http:// or https://, got {api_url!r}")
    if api_url.endswith("/chat/completions"):
        api_url = api_url[: -len("/chat/completions")]
    if "api_key" in r.table:
        raise ConfigError(
            f"{r.source}: '{r.where('api_key')}' is not allowed: keys never sit in config files; "
            f"put the key in an environment variable and name it with 'api_key_env'"
        )
    return api_url


def endpoint(r: Reader, name: str) -> Endpoint:
    kw = values(r, Endpoint, {"api_url": lambda: _api_url(r), "extra_headers": lambda: _extra_headers(r),
                               "query_params": lambda: _query_params(r), "extra_body": lambda: _extra_body(r),
                               "batch": lambda: _batch_options(r)}, defaults={"model": name})
    # no concurrency set: the endpoint's own level is found as the run goes (limits.ConcurrencyGate, auto)
    concurrency = kw["limits"]["concurrency"]
    limits = {**kw["limits"], "concurrency": AUTO_MAX if concurrency is None else concurrency,
              "auto": concurrency is None}
    try:  # the value objects check more (an empty name or model, ...): say which file and table
        return Endpoint(name=name, **{**kw, "limits": Limits(**limits), "retry": RetryPolicy(**kw["retry"]),
                                      "timeouts": Timeouts(**kw["timeouts"])})
    except ConfigError as exc:
        raise ConfigError(f"{r.source}: {r.path or 'the top level'}: {exc}") from None


def _extra_body(r: Reader) -> dict[str, Any]:
    extra_body = r.get("extra_body", dict, {})
    for banned in ("model", "messages", "stream"):
        if banned in extra_body:
            raise ConfigError(f"{r.source}: '{r.where('extra_body.' + banned)}' is set by arena-engine, remove it")
    return dict(extra_body)


_MODE = dict(spec(next(f for f in fields(Endpoint) if f.name == "batch")).also)["mode"]  # "live"


def _batch_options(r: Reader) -> BatchOptions | None:
    """`mode = "batch"` and its optional `batch` table (arena_engine.batch); None in live mode."""
    mode = r.choice("mode", ("live", "batch"), _MODE)
    b = r.sub("batch")
    if mode == "live":
        if b is not None:
            raise ConfigError(f"{r.source}: '{r.where('batch')}' is set but '{r.where('mode')}' is \"live\": "
                              "set mode = \"batch\" or remove the table")
        return None
    b = b or Reader(r.source, r.where("batch"), {})
    try:
        opts = BatchOptions(**values(b, BatchOptions))
    except ConfigError as exc:
        raise ConfigError(f"{r.source}: {r.where('batch')}: {exc}") from None
    b.done()
    return opts


#: Header and query names whose values are secrets: they must come from the environment.
_SECRET_NAME = re.compile(r"auth|key|token|secret|password|cookie|signature", re.IGNORECASE)


def _extra_headers(r: Reader) -> dict[str, str | EnvVar]:
    """`extra_headers = { "api-key" = { env = "AZURE_KEY" }, "x-team" = "evals" }`: a string, or a table
    naming the environment variable that holds the value (required for secrets such as keys)."""
    table = r.get("extra_headers", dict, {})
    out: dict[str, str | EnvVar] = {}
    for header, value in table.items():
        where = r.where(f"extra_headers.{header}")
        if isinstance(value, dict):
            if set(value) != {"env"} or not isinstance(value["env"], str) or not value["env"]:
                raise ConfigError(f"{r.source}: '{where}' must be a string or {{ env = \"VARIABLE\" }}")
            out[header] = EnvVar(value["env"])
        elif isinstance(value, str):
            if _SECRET_NAME.search(header):
                raise ConfigError(
                    f"{r.source}: '{where}' looks like a secret and is not allowed as text in a config file: "
                    f"put it in an environment variable and write {{ env = \"VARIABLE\" }}"
                )
            out[header] = value
        else:  # the value is not echoed: it may be a secret
            raise ConfigError(f"{r.source}: '{where}' must be a string or {{ env = \"VARIABLE\" }}")
    return out


def _query_params(r: Reader) -> dict[str, str]:
    """`query_params = { "api-version" = "2024-10-21" }`: added to every request's URL. No secrets: a
    URL is printed in logs and errors (send keys in a header)."""
    table = r.get("query_params", dict, {})
    out: dict[str, str] = {}
    for name, value in table.items():
        where = r.where(f"query_params.{name}")
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            raise ConfigError(f"{r.source}: '{where}' must be a string or a number, got {value!r}")
        if _SECRET_NAME.search(name):
            raise ConfigError(
                f"{r.source}: '{where}' looks like a secret; URLs show up in logs, so send it in "
                f"'extra_headers' with {{ env = \"VARIABLE\" }}"
            )
        out[name] = str(value)
    return out


def needs_budget(r: Reader, endpoint: Endpoint, generation: Mapping[str, Any]) -> None:
    """Anthropic's Messages API requires max_tokens: an endpoint batched through it must set one."""
    if endpoint.batch is None or endpoint.batch.protocol != "anthropic":
        return
    if not any(k in generation or k in endpoint.extra_body for k in ("max_tokens", "max_completion_tokens")):
        raise ConfigError(f"{r.source}: '{r.where('generation.max_tokens')}' is required with "
                          f"{r.where('batch.protocol')} = \"anthropic\" (the Messages API requires max_tokens)")
