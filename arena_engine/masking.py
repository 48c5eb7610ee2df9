"""Secrets that never show: the API key and secret header values, and masking them out of text.

`read_secrets` reads an endpoint's key and secret header values from the environment; `Secret` holds
the key (its repr never shows it) and masks it in text bound for logs and records; `Hidden` holds
secret values that are not text (the request headers).
"""

from __future__ import annotations

import os
import re
from typing import Any

from arena_engine.endpoint_config import Endpoint, EnvVar
from arena_engine.errors import ConfigError

__all__ = ["MASK", "SHORT_KEY", "Hidden", "Secret", "read_secrets"]

SHORT_KEY = 8  # API keys shorter than this are masked only where they stand as a token (see Secret)
MASK = "***"
_TOKEN_BEFORE = r"(?<![A-Za-z0-9_])(?<![A-Za-z0-9_][.-])"
_TOKEN_AFTER = r"(?![A-Za-z0-9_])(?![.-][A-Za-z0-9_])"


class Hidden:
    """Holds secret values that are not text (the request headers); its repr never shows them."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class Secret:
    """Holds the API key; its repr never shows it (so neither do `vars(client)` nor debuggers).

    `mask` hides the key in text bound for logs and records (server messages, failure reasons).
    A key shorter than SHORT_KEY characters is hidden only where it stands as a token: not inside a
    longer run of letters, digits and `_ - .` (a `-` or `.` that does not go on into such a character,
    like a full stop, ends a token). Hiding every occurrence of the key `x` turned
    "retry_budget_exhausted" into "retry_budget_e***hausted". Short keys are not refused: they are the
    placeholders local servers are run with ("EMPTY" in vLLM's examples, "ollama" in Ollama's), and
    refusing them would break those setups while protecting nothing (they are not secrets).
    A key of SHORT_KEY or more characters is hidden wherever it occurs, also glued to other text
    (an echo such as "Bearer%20sk-..." or "\\nsk-..." is still the key, and that many characters of a
    key do not turn up inside ordinary words): there, a leak would cost more than a masked word.
    """

    __slots__ = ("_pattern", "value")

    def __init__(self, value: str) -> None:
        self.value = value
        escaped = re.escape(value)
        self._pattern = re.compile(escaped if len(value) >= SHORT_KEY else _TOKEN_BEFORE + escaped + _TOKEN_AFTER)

    def mask(self, text: str) -> str:
        return self._pattern.sub(MASK, text) if self.value in text else text

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def read_secrets(endpoint: Endpoint, api_key: str | None = None) -> tuple[Secret | None, Hidden, tuple[Secret, ...]]:
    """An endpoint's API key (`api_key`, else the value of the variable `endpoint.api_key_env` names:
    ConfigError if that is named but unset), its extra headers with `EnvVar` values read (as secret),
    and every secret among them for masking, longest first."""
    if api_key is None and endpoint.api_key_env:
        api_key = os.environ.get(endpoint.api_key_env) or None
        if api_key is None:
            raise ConfigError(
                f"endpoint {endpoint.name!r}: environment variable {endpoint.api_key_env} is not set; "
                "export the API key there (or leave api_key_env out for an endpoint without keys)"
            )
    key = Secret(api_key) if api_key else None
    headers: dict[str, str] = {}
    secrets: list[str] = [api_key] if api_key else []
    for header, value in endpoint.extra_headers.items():
        if isinstance(value, EnvVar):
            found = os.environ.get(value.name)
            if not found:
                raise ConfigError(
                    f"endpoint {endpoint.name!r}: environment variable {value.name} (header {header!r}) "
                    "is not set; export it"
                )
            secrets.append(found)
            value = found
        headers[header] = value
    # longest first, so a key that contains another secret is masked whole
    return key, Hidden(headers), tuple(Secret(s) for s in sorted({s for s in secrets if s}, key=len, reverse=True))
