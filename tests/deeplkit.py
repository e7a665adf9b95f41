"""The official `deepl` library as a test client: its calls run in a thread (it is synchronous),
and the headers of every answer it got are kept (it does not show them), for X-Baton-Version."""
from __future__ import annotations

import asyncio

import deepl
import httpx


class Client:
    def __init__(self, url: str, key: str) -> None:
        self.deepl = deepl.Translator(key, server_url=url)
        self.headers: list[httpx.Headers] = []
        session = self.deepl._client._session  # noqa: SLF001  the library's requests.Session
        send = session.send

        def recorded(request: object, **options: object) -> object:
            response = send(request, **options)
            self.headers.append(httpx.Headers(dict(response.headers)))
            return response

        session.send = recorded

    async def __call__(self, method: str, *args: object, **kwargs: object) -> object:
        return await asyncio.to_thread(getattr(self.deepl, method), *args, **kwargs)
