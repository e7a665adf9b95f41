"""Readiness and liveness of one backend over its HTTP API.

Readiness: /health answers 200, the served context can hold the answer cap, and a 1-token
completion works (warm-up). Liveness, once ready: /health answers within a short timeout
(a frozen server keeps its port open: connects succeed and requests hang, so only a timeout
notices it). A remote server is probed on /v1/models instead (engine/remote.py).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Generator
from typing import Any

import httpx


class NotReadyYet(Exception):
    """A readiness check failed; the message says why, for the operator."""


class Bearer(httpx.Auth):
    """The API key on each request, asked of `key` every time (a remote version's rotated secret is
    used from the next request on); no header when there is none."""

    def __init__(self, key: Callable[[], str | None]) -> None:
        self._key = key

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if key := self._key():
            request.headers["Authorization"] = f"Bearer {key}"
        yield request


class Prober:
    health_path = "/health"  # vLLM's; a remote server is probed on what every OpenAI-compatible one has

    def __init__(self, url: str, auth: httpx.Auth, served_name: str, **client_options: Any) -> None:
        self.served_name = served_name
        self._http = httpx.AsyncClient(base_url=url, auth=auth, timeout=10, **client_options)

    async def close(self) -> None:
        await self._http.aclose()

    async def wait_healthy(self, interval_s: float, exited: asyncio.Event) -> None:
        """Poll the health path until it answers 200; return early if the process exits."""
        while not exited.is_set():
            with contextlib.suppress(httpx.HTTPError):
                if self.healthy(await self._http.get(self.health_path)):
                    return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), interval_s)

    def healthy(self, resp: httpx.Response) -> bool:
        """Whether a health answer says ready; raises NotReadyYet when waiting longer cannot help."""
        return resp.status_code == 200

    async def check_context(self, cap: int | None) -> None:
        """A cap on answer length that the served context cannot hold would have every request
        refused: fail the load now, before the version can be switched to."""
        if cap is None:
            return
        try:
            cards = (await self._http.get("/v1/models")).json().get("data") or [{}]
        except (httpx.HTTPError, ValueError):
            return  # a server without the model card: requests will tell
        # A remote server may serve several models: the served one's card.
        card = next((c for c in cards if isinstance(c, dict) and c.get("id") == self.served_name), cards[0])
        context = card.get("max_model_len")
        if isinstance(context, int) and cap >= context:
            raise NotReadyYet(
                f"max_tokens {cap} leaves no room for a prompt in its context of {context} tokens; "
                f"load it again with a smaller --max-tokens or a larger --max-model-len."
            )

    async def warm_up(self) -> None:
        body = {"model": self.served_name, "prompt": "warm-up", "max_tokens": 1, "temperature": 0}
        try:
            resp = await self._http.post("/v1/completions", json=body, timeout=None)
        except httpx.HTTPError as exc:
            raise NotReadyYet(f"the warm-up request failed ({type(exc).__name__}: {exc})") from exc
        if resp.status_code != 200:
            raise NotReadyYet(f"the warm-up request answered HTTP {resp.status_code}: {resp.text[:200]}")

    async def live(self, timeout_s: float) -> tuple[str, bool]:
        """('', False) when the health path answers 200 within `timeout_s`; else why not, and whether
        the connection itself failed (a dead server) rather than timed out (a frozen one)."""
        path = self.health_path
        try:
            resp = await self._http.get(path, timeout=timeout_s)
        except httpx.TimeoutException:
            return f"{path} did not answer within {timeout_s:g} s", False
        except httpx.HTTPError as exc:
            return f"{path} failed ({type(exc).__name__})", True
        return ("", False) if resp.status_code == 200 else (f"{path} answered HTTP {resp.status_code}", False)
