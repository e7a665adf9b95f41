"""The HTTP client of one backend's OpenAI-compatible API: a streaming POST with aiohttp, and its
server-sent events read as the backend's own bytes.

Each `data:` line is parsed once, by the C json decoder, into a dict the engine reads a few keys
of (text, finish_reason, usage, model); the line's bytes go on to a caller that relays them. No
SDK object is built per token: on a small box the SDK's per-chunk models cost more CPU than the
proxying itself. aiohttp rather than httpx: its C parser and connection pool cost about a quarter
of httpx's CPU per streamed request (2.4 against 0.6 ms for 16 tokens, measured on this box), and
this runs once per token of every answer. Closing a stream early closes its connection, which
aborts the generation in vLLM.
"""
from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver

# Per connect and per read, not per answer; the stall deadlines (engine/translate.py) end a slow
# answer long before this.
TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=600, sock_read=600)
MAX_CONNECTIONS = 1000
KEEPALIVE_S = 4.0


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
    a remote version's rotated secret is used from the next request on). A remote version's
    `resolver` connects to the addresses checked at its start (engine/remote_address.py)."""

    def __init__(self, url: str, key: Callable[[], str | None], resolver: AbstractResolver | None = None) -> None:
        self.url = url
        self.key = key
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None

    @property
    def api_key(self) -> str | None:
        return self.key()

    def _http(self) -> aiohttp.ClientSession:
        """Made at first use, inside the event loop that uses it."""
        if self._session is None:
            # No DNS cache: a remote name is pinned by its resolver, a local backend is an address.
            # Idle connections are dropped before vLLM's uvicorn drops them (5 s), so that a request
            # never goes out on a connection the server is closing.
            connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS, use_dns_cache=False, resolver=self._resolver,
                                             keepalive_timeout=KEEPALIVE_S)
            self._session = aiohttp.ClientSession(connector=connector, timeout=TIMEOUT,
                                                  cookie_jar=aiohttp.DummyCookieJar(), trust_env=False)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @asynccontextmanager
    async def stream(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[AsyncIterator[Event]]:
        """POST `body` to `path` (under /v1) and yield its events; a refusal raises BackendError with
        the backend's message, a lost connection aiohttp's ClientError. Leaving the block early
        closes the connection."""
        data = json.dumps(body, ensure_ascii=False).encode()
        headers = {"Content-Type": "application/json"}
        if key := self.key():
            headers["Authorization"] = f"Bearer {key}"
        wait = WAITING.get()
        if wait is not None:
            wait.begin()
        try:
            # No redirects, no environment proxy: the checked URL is the only destination.
            async with self._http().post(f"{self.url}/v1{path}", data=data, headers=headers,
                                         allow_redirects=False) as response:
                if response.status >= 400:
                    text = await response.text(errors="replace")
                    try:
                        parsed: Any = json.loads(text)
                    except ValueError:
                        parsed = None
                    raise BackendError(error_message(parsed, text or f"HTTP {response.status}"), response.status)
                try:
                    yield _events(response)
                except BaseException:
                    response.close()  # the answer is not wanted any more: vLLM aborts the generation
                    raise
        finally:
            if wait is not None:
                wait.end()


async def _events(response: aiohttp.ClientResponse) -> AsyncGenerator[Event, None]:
    """The data lines up to `[DONE]`; an error event (vLLM's mid-stream failure) raises BackendError.
    The body is read to its end, so that the connection goes back to the pool."""
    rest, done = b"", False
    async for part in response.content.iter_any():
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
