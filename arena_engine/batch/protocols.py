"""The batch API of an endpoint, by its ``batch.protocol``."""

from __future__ import annotations

import aiohttp

from ..client import Endpoint
from .anthropic import AnthropicBatches
from .driver import BatchApi
from .openai import OpenAIBatches


def batch_api(http: aiohttp.ClientSession, endpoint: Endpoint) -> BatchApi:
    assert endpoint.batch is not None
    if endpoint.batch.protocol == "anthropic":
        return AnthropicBatches(http, endpoint)
    return OpenAIBatches(http, endpoint)
