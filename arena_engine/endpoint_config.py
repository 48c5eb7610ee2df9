"""What the config says about one endpoint, as values: its URL and model, limits, retries, timeouts.

No runtime imports (no aiohttp, no event loop): loading a config file needs only this module, and the
client (`arena_engine.client`) and the limiter (`arena_engine.limits`) read these values. Each default
is defined once, here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .batch_options import BatchOptions
from .config_fields import DERIVED, key
from .errors import ConfigError

__all__ = ["AUTO_MAX", "AUTO_START", "DEFAULT_CONCURRENCY", "MAX_CONCURRENCY", "MINUTE", "Endpoint", "EnvVar", "Limits",
           "RetryPolicy", "Timeouts"]

DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_READ_TIMEOUT = 120.0
DEFAULT_TOTAL_TIMEOUT = 300.0
DEFAULT_MAX_ATTEMPTS = 6
DEFAULT_MAX_TIME = 600.0
DEFAULT_BASE_DELAY = 0.5
DEFAULT_MAX_DELAY = 60.0
#: Headers the client sets itself; `Endpoint.extra_headers` may not.
RESERVED_HEADERS = frozenset({"content-type", "content-length", "host", "accept"})

DEFAULT_CONCURRENCY = 32
MINUTE = 60.0
#: An endpoint whose config sets no `concurrency` starts with AUTO_START slots and finds its own level,
#: up to AUTO_MAX: slots double per round of answers while latency holds, and are cut when latency
#: climbs (a server queueing the requests it cannot serve) or on a 429/503.
AUTO_START = 8
AUTO_MAX = 1024
# The ceiling on a configured concurrency. Each concurrent request holds a connection, a task and its
# buffers; a typo such as `concurrency = 10000000000` once grew the process to 14 GB within a minute.
MAX_CONCURRENCY = 4096


def _whole(value: Any, low: int) -> bool:
    """An int (not a bool) of at least ``low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any, *, above: float | None = None, at_least: float = 0.0, finite: bool = False) -> bool:
    """A number (not a bool) above ``above`` (else at least ``at_least``), finite if asked; NaN never is."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (finite and not math.isfinite(value)):
        return False
    return value > above if above is not None else value >= at_least


@dataclass(frozen=True)
class Limits:
    """What one endpoint allows: concurrent requests, requests per minute, tokens per minute.

    `adaptive=True` halves the concurrency on a 429 (once per round of requests) and adds it back one
    slot per round of successes, never above `concurrency`.

    `window` is the sliding window (seconds) over which rpm/tpm are enforced: at most rpm * window / 60
    requests in any window of that length. The default is the minute the limits are quoted in; shorter
    windows also smooth bursts (and make limits observable in short tests and benchmarks).
    """

    # the config's keys (docs/config.md, "Endpoint keys"): no concurrency there is `auto` up to AUTO_MAX
    concurrency: int = key(DEFAULT_CONCURRENCY, kind=int, check="positive", ceiling=MAX_CONCURRENCY, config_default=None,
                           doc="requests in flight at once (none: found as the run goes)")
    rpm: float | None = key(None, kind=float, check="positive", dump="not_none", doc="requests per minute")
    tpm: float | None = key(None, kind=float, check="positive", dump="not_none", doc="tokens per minute")
    adaptive: bool = key(False, name="adaptive_concurrency", kind=bool, config_default=True, dump="changed",
                         doc="halve the concurrency on a 429/503, grow it back per round of answers")
    #: `concurrency` is only the ceiling: start at AUTO_START and follow the endpoint's latency (see
    #: ConcurrencyGate); the config's default when it sets no concurrency
    auto: bool = False
    window: float = MINUTE

    def __post_init__(self) -> None:
        if not _whole(self.concurrency, 1):
            raise ConfigError(f"limits.concurrency must be an integer >= 1, not {self.concurrency!r}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and not _number(value, above=0, finite=True):
                raise ConfigError(f"limits.{name} must be a positive number or None, not {value!r}")
        if not _number(self.window, above=0, finite=True):
            raise ConfigError(f"limits.window must be a positive number of seconds, not {self.window!r}")

    def request_window(self) -> tuple[float, float] | None:
        """(requests, seconds) of the request window: a whole number of requests (at least 1), the
        window stretched to keep the rate exactly rpm; None without an rpm limit."""
        if self.rpm is None:
            return None
        capacity = max(1, math.floor(self.rpm * self.window / MINUTE + 1e-9))
        return float(capacity), MINUTE * capacity / self.rpm

    def token_window(self) -> tuple[float, float] | None:
        """(tokens, seconds) of the token window; None without a tpm limit."""
        if self.tpm is None:
            return None
        return self.tpm * self.window / MINUTE, self.window


@dataclass(frozen=True)
class Timeouts:
    """Per-attempt timeouts in seconds: opening a connection, between reads, the whole attempt."""

    connect: float = key(DEFAULT_CONNECT_TIMEOUT, name="connect_timeout", kind=float, check="positive",
                         doc="seconds to open a connection")
    read: float = key(DEFAULT_READ_TIMEOUT, name="read_timeout", kind=float, check="positive",
                      doc="seconds of silence between two reads of a reply")
    total: float = key(DEFAULT_TOTAL_TIMEOUT, name="timeout", kind=float, check="positive",
                       doc="seconds for one whole attempt")

    def __post_init__(self) -> None:
        for name in ("connect", "read", "total"):
            value = getattr(self, name)
            if not _number(value, above=0):
                raise ConfigError(f"timeouts.{name} must be a positive number of seconds, not {value!r}")


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` attempts within `max_time` seconds; backoff base/max in seconds."""

    max_attempts: int = key(DEFAULT_MAX_ATTEMPTS, kind=int, check="positive",
                            doc="attempts per request, the first included")
    max_time: float = key(DEFAULT_MAX_TIME, name="retry_max_time", kind=float, check="positive",
                          doc="seconds across a request's attempts")
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY

    def __post_init__(self) -> None:
        if not _whole(self.max_attempts, 1):
            raise ConfigError(f"retry.max_attempts must be an integer >= 1, not {self.max_attempts!r}")
        for name in ("max_time", "base_delay", "max_delay"):
            value = getattr(self, name)
            if not _number(value, at_least=0):
                raise ConfigError(f"retry.{name} must be a number >= 0, not {value!r}")


@dataclass(frozen=True)
class EnvVar:
    """A value read from the environment variable `name` when the client opens (header secrets such
    as Azure's `api-key`); only the name is ever stored, printed or saved."""

    name: str


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible endpoint serving one model. `api_url` ends before `/chat/completions`.

    `extra_headers` go with every request (a value may be an `EnvVar`, e.g. Azure's
    `{"api-key": EnvVar("AZURE_KEY")}`); `query_params` are added to the URL (Azure's `api-version`);
    `extra_body` fills the request body's keys that the request's own params do not set.
    """

    name: str  # the model's or judge's name (not a key of the endpoint's own)
    api_url: str = key(required=True, kind=str, custom=True, doc="the OpenAI-compatible base URL")
    model: str = key(config_default=DERIVED, kind=str, doc="the model id sent (default: the entry's name)")
    api_key_env: str | None = key(None, kind=str, secret=True, dump="non_empty",
                                  doc="the environment variable holding the bearer key")
    limits: Limits = key(factory=Limits, of=Limits, flat=True)
    retry: RetryPolicy = key(factory=RetryPolicy, of=RetryPolicy, flat=True)
    timeouts: Timeouts = key(factory=Timeouts, of=Timeouts, flat=True)
    extra_headers: Mapping[str, str | EnvVar] = key(factory=dict, hash=False, kind=dict, secret=True, custom=True,
                                                    dump="non_empty", doc="headers sent with every request")
    query_params: Mapping[str, str] = key(factory=dict, hash=False, kind=dict, custom=True, dump="non_empty",
                                          doc="added to every request's URL")
    extra_body: Mapping[str, Any] = key(factory=dict, hash=False, kind=dict, custom=True, dump="non_empty",
                                        doc="merged into every request body")
    # mode = "batch": requests go through the provider's batch API
    batch: BatchOptions | None = key(None, kind=dict, of=BatchOptions, also=(("mode", "live"),), custom=True,
                                     doc="the batch table (with mode = \"batch\")")

    def __post_init__(self) -> None:
        if not self.name:
            raise ConfigError("endpoint.name must not be empty")
        if not self.api_url.startswith(("http://", "https://")):
            raise ConfigError(
                f"endpoint {self.name!r}: api_url must start with http:// or https://, not {self.api_url!r}"
            )
        if not self.model:
            raise ConfigError(f"endpoint {self.name!r}: model must not be empty")
        for header, value in self.extra_headers.items():
            if not isinstance(header, str) or not header.strip() or header.lower() in RESERVED_HEADERS:
                raise ConfigError(f"endpoint {self.name!r}: extra header {header!r} cannot be set")
            if not isinstance(value, str | EnvVar):
                raise ConfigError(f"endpoint {self.name!r}: extra header {header!r} must be a string or an EnvVar")
            if header.lower() == "authorization" and self.api_key_env:
                raise ConfigError(
                    f"endpoint {self.name!r}: an Authorization header and api_key_env both set the key; keep one"
                )
        for banned in ("model", "messages", "stream"):
            if banned in self.extra_body:
                raise ConfigError(f"endpoint {self.name!r}: extra_body.{banned} is set by arena-engine, remove it")

    @property
    def chat_url(self) -> str:
        return self.api_url.rstrip("/") + "/chat/completions"

    def env_names(self) -> list[str]:
        """The environment variables this endpoint reads secrets from (the key, header values)."""
        names = [self.api_key_env] if self.api_key_env else []
        return names + [v.name for v in self.extra_headers.values() if isinstance(v, EnvVar)]
