"""What an endpoint was found to refuse about a request's shape, remembered for every later request.

Reshaping, once per endpoint and remembered by the client: a `response_format` the server refuses
(llama-cpp-python 0.3.x answers OpenAI's json_schema with a 500 "Input should be 'text' or
'json_object'") steps down `replies.format_ladder` (json_schema -> json_object with the schema ->
json_object -> plain text); a `max_tokens` it calls unsupported becomes `max_completion_tokens` (or
back). The caller's params are never changed, so checkpoint keys stay those of the requested shape.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from arena_engine.replies import FormatShape, refused_token_param, refuses_format

__all__ = ["Shapes"]

log = logging.getLogger("arena_engine.client")  # the client's warnings, as they always were


class Shapes:
    """The shapes one endpoint refuses. `learned` counts what was found: a request built before the
    last finding adapts again (`adapt`) before it is sent."""

    __slots__ = ("_where", "learned", "refused_formats", "token_param")

    def __init__(self, name: str, url: str, model: str) -> None:
        self._where = (name, url, model)  # for the warnings
        self.refused_formats: set[str] = set()
        self.token_param: tuple[str, str] | None = None  # (refused, instead)
        self.learned = 0

    def adapt(self, body: dict[str, Any], ladder: Sequence[FormatShape] | None) -> None:
        """Give `body` the shape this endpoint is known to take."""
        if ladder is not None:
            self.shape(body, ladder)
        if self.token_param is not None:
            refused, instead = self.token_param
            if refused in body and instead not in body:
                body[instead] = body.pop(refused)

    def shape(self, body: dict[str, Any], ladder: Sequence[FormatShape]) -> str:
        """Put the best response_format of `ladder` this endpoint has not refused into `body`."""
        shape = next((s for s in ladder if s.name not in self.refused_formats), ladder[-1])
        if shape.value is None:
            body.pop("response_format", None)
        else:
            body["response_format"] = shape.value
        return shape.name

    def reshape(self, reason: str, body: dict[str, Any], ladder: Sequence[FormatShape] | None) -> bool:
        """Whether the server refused the request for a shape it can be sent in otherwise; if so `body`
        now has that shape, and the endpoint remembers it for every later request."""
        if ladder is not None and len(ladder) > 1 and refuses_format(reason):
            sent = body.get("response_format")
            rung = next((s.name for s in ladder if s.value == sent), None)
            if rung is not None and rung != ladder[-1].name:
                if rung not in self.refused_formats:
                    self.refused_formats.add(rung)
                    self.learned += 1
                    log.warning("endpoint %r (%s, model %s) refuses response_format %s (%s); sending %s from now on",
                                *self._where, rung, reason, self.shape({}, ladder))
                self.shape(body, ladder)
                return True
        swap = refused_token_param(reason, body)
        if swap is not None:
            if self.token_param != swap:
                self.token_param = swap
                self.learned += 1
                log.warning("endpoint %r (%s, model %s) refuses %s (%s); sending %s from now on",
                            *self._where, swap[0], reason, swap[1])
            body[swap[1]] = body.pop(swap[0])
            return True
        return False
