"""The HTTP client of one backend's OpenAI-compatible API: a streaming POST with httpx, and its
server-sent events read as the backend's own bytes.

Each `data:` line is parsed once, by the C json decoder, into a dict the engine reads a few keys
of (text, finish_reason, usage, model); the line's bytes go on to a caller that relays them. No
SDK object is built per token: on a small box the SDK's per-chunk models cost more CPU than the
proxying itself. Closing a stream closes its connection, which aborts the generation in vLLM.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import aclosing, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

import httpx

from .probe import Bearer

TIMEOUT_S = 600.0  # the stall deadlines (engine/translate.py) end a slow answer long before this
LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


class BackendWait:
    """How long one client request waited on backends: from each backend request handed to the HTTP
    client until its response was closed, overlapping attempts counted once. Whatever else the
    request took was Baton's own time (gateway/overhead.py)."""

    def __init__(self) -> None:
        self._open = 0
        self._since = 0.0
        self._total = 0.0

    def begin(self) -> None:
        if not self._open:
            self._since = time.perf_counter()
        self._open += 1

    def end(self) -> None:
        self._open -= 1
        if not self._open:
            self._total += time.perf_counter() - self._since

    def until(self, at: float) -> float:
        """Seconds waited up to `at` (time.perf_counter), which is not before the last begin."""
        return self._total + (max(0.0, at - self._since) if self._open else 0.0)


# The wait of the client request this task serves (tasks it starts share it); None: not measured.
WAITING: ContextVar[BackendWait | None] = ContextVar("baton_backend_wait", default=None)


class BackendError(Exception):
    """The backend refused a request (`status`, with its own message) or reported an error in the
    middle of its stream (`status` None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True, slots=True)
class Event:
    """One streamed chunk: the JSON of its data line as the backend sent it, that JSON parsed, and
    when its bytes arrived (time.perf_counter)."""

    raw: bytes
    data: Mapping[str, Any]
    received: float


def error_message(body: Any, fallback: str) -> str:
    """vLLM's own words from an error body ({"error": {"message": ...}} or {"message": ...})."""
    body = body if isinstance(body, dict) else {}
    inner = body.get("error", body)
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or fallback)[:300]


class BackendClient:
    """One backend's connection pool, with its API key on each request (asked of `key` each time:
    a remote version's rotated secret is used from the next request on)."""

    def __init__(self, url: str, key: Callable[[], str | None], **options: Any) -> None:
        self.key = key
        self._http = httpx.AsyncClient(base_url=f"{url}/v1", auth=Bearer(key), timeout=TIMEOUT_S, limits=LIMITS,
                                       **({"trust_env": False} | options))

    @property
    def api_key(self) -> str | None:
        return self.key()

    async def close(self) -> None:
        await self._http.aclose()

    @asynccontextmanager
    async def stream(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[AsyncIterator[Event]]:
        """POST `body` to `path` and yield its events; a refusal raises BackendError with the
        backend's message, a lost connection httpx's error. Leaving the block closes the response."""
        request = self._http.build_request("POST", path, content=json.dumps(body, ensure_ascii=False).encode(),
                                           headers={"Content-Type": "application/json"})
        wait = WAITING.get()
        if wait is not None:
            wait.begin()
        try:
            async with self._response(request) as events:
                yield events
        finally:
            if wait is not None:
                wait.end()

    @asynccontextmanager
    async def _response(self, request: httpx.Request) -> AsyncIterator[AsyncIterator[Event]]:
        response = await self._http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                try:
                    parsed: Any = response.json()
                except ValueError:
                    parsed = None
                raise BackendError(error_message(parsed, response.text or f"HTTP {response.status_code}"),
                                   response.status_code)
            events = _events(response)
            try:
                yield events
            finally:
                await events.aclose()
        finally:
            await response.aclose()


async def _events(response: httpx.Response) -> AsyncGenerator[Event, None]:
    """The data lines up to `[DONE]`; an error event (vLLM's mid-stream failure) raises BackendError.
    The body is read to its end, so that the connection goes back to the pool."""
    rest, done = b"", False
    # Closed in this task, whatever happens (httpx types it as a bare iterator; it is a generator).
    async with aclosing(cast(AsyncGenerator[bytes, None], response.aiter_bytes())) as parts:
        async for part in parts:
            if done:
                continue
            received = time.perf_counter()
            *lines, rest = (rest + part).split(b"\n")
            for line in lines:
                if not line.startswith(b"data:"):
                    continue  # blank separators, comments, event names: nothing the engine uses
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    break
                try:
                    data = json.loads(payload)
                except ValueError:
                    raise BackendError(f"a malformed event: {payload[:80]!r}") from None
                if not isinstance(data, dict):
                    raise BackendError(f"an event that is not an object: {payload[:80]!r}")
                if data.get("error") or data.get("object") == "error":
                    raise BackendError(error_message(data, "an error event"))
                yield Event(payload, data, received)
