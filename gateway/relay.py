"""One engine request relayed to an HTTP client, streamed (SSE) or whole.

The engine runs in its own task and hands chunks over an unbounded queue: a slow client must
never hold up the engine's stream, or its stall deadline would blame a healthy backend.
Nothing is sent before the first text: until then an attempt that fails is retried by the
engine unseen (chunks it had sent, such as a chat's role chunk, are dropped at each new route),
and an error becomes a proper status code. After the first text the bytes cannot be taken back,
so a backend failing mid-answer ends the stream with an error event instead of a second answer
stitched to the first; a client's retry gets a whole answer. The headers name the version.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse

from engine import BatonError, Chunk, CompletionRequest, Engine, Restart, RouteInfo, TranslationResult

from . import metrics, overhead
from .errors import ApiError, from_baton
from .wire import DONE, ChunkWriter

log = logging.getLogger("baton.gateway")


@dataclass(frozen=True)
class _Routed:
    info: RouteInfo


@dataclass(frozen=True)
class _Done:
    result: TranslationResult


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_Item = Chunk | _Routed | _Done | _Failed


def _error_event(exc: BaseException) -> bytes:
    err = (from_baton(exc, inference=True) if isinstance(exc, BatonError)
           else ApiError(500, "The answer failed on Baton's side (it is in the server log). Retry.", "error"))
    body = {"error": {"message": err.message, "type": "server_error", "param": None, "code": err.status}}
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n".encode() + DONE


def _headers(version: str, role: str) -> dict[str, str]:
    return {"X-Baton-Version": version, "X-Baton-Role": role, "Cache-Control": "no-store"}


class Relay:
    def __init__(self, engine: Engine, req: CompletionRequest, key_name: str, *, resumable: bool) -> None:
        self._engine = engine
        self._req = req
        self._key = key_name
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()
        self._resumable = resumable  # nothing reaches the client before the end: an answer may start over
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        async def on_chunk(chunk: Chunk) -> None:
            self._queue.put_nowait(chunk)

        async def on_route(info: RouteInfo) -> None:
            self._queue.put_nowait(_Routed(info))

        async def on_restart(_: Restart) -> None:
            self._queue.put_nowait(_Routed(RouteInfo("", "")))  # what came so far is void

        try:
            result = await self._engine.complete(self._req, on_chunk, on_route,
                                                 on_restart if self._resumable else None)
        except Exception as exc:  # noqa: BLE001  handed to the client's response, and a bug is logged
            if not isinstance(exc, BatonError):
                log.error("a gateway request failed", exc_info=exc)
            self._queue.put_nowait(_Failed(exc))
            return
        metrics.API_TOKENS.labels(self._key, result.version).inc(result.completion_tokens)
        self._queue.put_nowait(_Done(result))

    async def _first(self) -> tuple[list[Chunk], _Item, RouteInfo | None]:
        """Wait for the first text (or the end): the chunks held back, the item that ended the
        wait, and the route that produced them."""
        held: list[Chunk] = []
        route: RouteInfo | None = None
        while True:
            item = await self._queue.get()
            if isinstance(item, _Routed):
                held, route = [], item.info
            elif isinstance(item, Chunk) and not item.text:
                held.append(item)
            else:
                return held, item, route

    async def _stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()  # the client left: closing the backend stream aborts its generation
            await asyncio.gather(self._task, return_exceptions=True)

    async def stream(self, with_usage: bool) -> Response:
        self._task = asyncio.create_task(self._run())
        try:
            held, first, route = await self._first()
        except BaseException:
            await self._stop()
            raise
        if isinstance(first, _Failed):
            raise first.error
        assert route is not None  # a chunk or the end always follows a route
        version = first.result.version if isinstance(first, _Done) else route.version
        if isinstance(first, Chunk):
            overhead.answered_at(first.event.received)

        writer = ChunkWriter(version, with_usage)

        async def events() -> AsyncIterator[bytes]:
            # Whatever has queued up goes out in one write: fewer sends when the client is slower
            # than the backend.
            try:
                out = [line for chunk in held if (line := writer.encode(chunk)) is not None]
                item: _Item = first
                while True:
                    if isinstance(item, Chunk):
                        if (line := writer.encode(item)) is not None:
                            out.append(line)
                    elif not isinstance(item, _Routed):  # the end
                        out.append(_error_event(item.error) if isinstance(item, _Failed) else DONE)
                        yield b"".join(out)
                        return
                    if self._queue.empty():
                        yield b"".join(out)
                        out = []
                        item = await self._queue.get()
                    else:
                        item = self._queue.get_nowait()
            finally:
                await self._stop()

        return StreamingResponse(events(), media_type="text/event-stream", headers=_headers(version, route.role))

    async def whole(self, chat: bool) -> Response:
        """The answer in one JSON body, in vLLM's shape; an answer cut by a failing backend is
        translated again from the start, since the client has seen nothing yet."""
        self._task = asyncio.create_task(self._run())
        try:
            text: list[str] = []
            first: Chunk | None = None
            while True:
                item = await self._queue.get()
                if isinstance(item, _Routed):
                    text, first = [], None
                elif isinstance(item, Chunk):
                    first = first or item
                    text.append(item.text)
                elif isinstance(item, _Failed):
                    raise item.error
                else:
                    return JSONResponse(_body(item.result, "".join(text), first, chat),
                                        headers=_headers(item.result.version, item.result.role))
        finally:
            await self._stop()


def _body(result: TranslationResult, text: str, first: Chunk | None, chat: bool) -> dict[str, Any]:
    data = first.event.data if first is not None else {}
    usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
             "total_tokens": result.prompt_tokens + result.completion_tokens}
    choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": result.finish_reason}
    if chat:
        choice["message"] = {"role": "assistant", "content": text}
    else:
        choice["text"] = text
    return {"id": data.get("id") or f"{'chatcmpl' if chat else 'cmpl'}-baton-{time.time_ns()}",
            "object": "chat.completion" if chat else "text_completion",
            "created": data.get("created") or int(time.time()),
            "model": result.version, "choices": [choice], "usage": usage}
