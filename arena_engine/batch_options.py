"""An endpoint's batch settings (``mode = "batch"`` and its ``batch`` table; docs/config.md).

Beside client.py and config_values.py, not in batch/, because an Endpoint carries them and the batch
package stands above both."""

from __future__ import annotations

from dataclasses import dataclass

from .config_fields import key
from .errors import ConfigError

MAX_REQUESTS = 50_000  # OpenAI's limit per batch
MAX_BYTES = 190 * 1024 * 1024  # under OpenAI's 200 MB input file limit
COMPLETION_WINDOW = "24h"
POLL_INTERVAL = 30.0
DISCOUNT = 0.5
MAX_WAIT = 600.0
RESUBMITS = 2
PROTOCOLS = ("openai", "anthropic")  # OpenAI's Batch API (and its copies), Anthropic's Message Batches


@dataclass(frozen=True)
class BatchOptions:
    """How an endpoint in batch mode cuts and watches its batches.

    ``max_requests`` / ``max_bytes`` cut a batch's input file; ``poll_interval`` is the first wait between
    status polls (it grows 1.5x per poll up to 10x); ``discount`` is the batch price as a share of the live
    price (the cost report); ``resubmits`` is how many times a row that errored or expired is sent again
    before it is kept as a failure with its reason; ``protocol`` is the provider's batch API (``PROTOCOLS``).
    """

    max_requests: int = key(MAX_REQUESTS, kind=int, check="positive", doc="requests per input file")
    max_bytes: int = key(MAX_BYTES, kind=int, check="positive", doc="bytes per input file")
    completion_window: str = key(COMPLETION_WINDOW, kind=str, doc="sent with each batch")
    poll_interval: float = key(POLL_INTERVAL, kind=float, check="positive", doc="first wait between polls")
    discount: float = key(DISCOUNT, kind=float, check="finite", doc="batch price / live price")
    max_wait: float = key(MAX_WAIT, kind=float, check="positive", doc="seconds before a partial file is cut")
    resubmits: int = key(RESUBMITS, kind=int, check="non_negative", doc="times a failed row is sent again")
    protocol: str = key("openai", kind=str, check="choice", choices=PROTOCOLS, doc="the provider's batch API")

    def __post_init__(self) -> None:
        if self.max_requests < 1 or self.max_bytes < 1024:
            raise ConfigError("batch.max_requests must be >= 1 and batch.max_bytes >= 1024")
        if not self.poll_interval > 0 or not self.max_wait > 0:
            raise ConfigError("batch.poll_interval and batch.max_wait must be > 0")
        if not 0 <= self.discount <= 1:
            raise ConfigError(f"batch.discount must be between 0 and 1, got {self.discount}")
        if self.resubmits < 0:
            raise ConfigError("batch.resubmits must be >= 0")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"batch.protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if self.protocol == "anthropic" and self.max_requests > 100_000:
            raise ConfigError("batch.max_requests must be <= 100000 with protocol \"anthropic\" (its limit per batch)")
