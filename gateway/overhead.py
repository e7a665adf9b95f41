"""Baton's own time on each inference request (/v1, and the DeepL and LibreTranslate APIs), in the
`X-Baton-Overhead-Ms` header (as LiteLLM's x-litellm-overhead-duration-ms) and the
`baton_overhead_seconds` histogram, by route.

It counts from when the route gets the request (after the HTTP server parsed its head) until its
response's headers are ready, less the time spent waiting on backends (engine/backend_http.py's
BackendWait: from each backend request handed to the HTTP client until its response ended). For a
stream the headers go out with the first text, so the wait counts only up to the arrival of the
backend event that carried it: what is left is the request's way in (body, key, routing, building
the backend request) plus the first text's way out. For a whole answer, Baton's per-chunk work
overlaps the backend's generation and is not counted; retries' waits are.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from fastapi import Response

from engine.backend_http import WAITING, BackendWait

from . import metrics

HEADER = "X-Baton-Overhead-Ms"


class Overhead:
    def __init__(self) -> None:
        self.arrived = time.perf_counter()
        self.wait = BackendWait()
        self.answered: float | None = None  # when the backend event the response goes out on arrived

    def seconds(self) -> float:
        now = time.perf_counter()
        return max(0.0, now - self.arrived - self.wait.until(self.answered or now))


_CURRENT: ContextVar[Overhead | None] = ContextVar("baton_overhead", default=None)


@contextmanager
def measured() -> Iterator[Overhead]:
    """One request's measure, shared with the tasks it starts (they copy the context)."""
    overhead = Overhead()
    tokens = _CURRENT.set(overhead), WAITING.set(overhead.wait)
    try:
        yield overhead
    finally:
        _CURRENT.reset(tokens[0])
        WAITING.reset(tokens[1])


def answered_at(received: float) -> None:
    """A stream's headers go out on the backend event that arrived at `received`."""
    if (overhead := _CURRENT.get()) is not None:
        overhead.answered = received


def report(overhead: Overhead, response: Response, route: str) -> None:
    seconds = overhead.seconds()
    response.headers[HEADER] = f"{seconds * 1000:.3f}"
    metrics.OVERHEAD.labels(route).observe(seconds)
