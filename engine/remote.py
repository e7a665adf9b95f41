"""A remote version's server: one that runs elsewhere (vLLM on Kubernetes, Ray Serve, another GPU
host), which Baton probes, routes to and fails over from, but never starts or stops.

`RemoteServer` has the shape the supervisor drives for a local process (engine/process.py), so a
remote version goes through the same lifecycle and state machine; "exiting" is Baton letting go of
it. Its API key is read from the environment variable the recipe names, at each request. Each start
resolves its host and pins its clients to the checked addresses (engine/remote_address.py).
"""
from __future__ import annotations

import asyncio
import os

import httpx

from .probe import Bearer, NotReadyYet, Prober
from .remote_address import AddressRefused, Pin, checked_addresses, prober_options


class RemoteServer:
    pid: int | None = None  # no local process: nothing to record, signal or reap

    def __init__(self, url: str, allowed: list[str], pin: Pin) -> None:
        self.url, self.allowed, self.pin = url, allowed, pin
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self._attached = False

    async def spawn(self) -> None:
        """Nothing to start: the server runs already (the prober finds out whether it answers). Its
        host is resolved now, and the clients pinned to the addresses checked."""
        try:
            self.pin.addresses = await checked_addresses(self.url, self.allowed)
        except AddressRefused as exc:
            raise NotReadyYet(f"the server at {self.url} may not be used: {exc}; fix the name's DNS or "
                              "BATON_ALLOWED_REMOTE") from None
        self._attached = True

    async def wait_exit(self) -> int:
        await self.exited.wait()
        return 0

    @property
    def running(self) -> bool:
        return self._attached and not self.exited.is_set()

    async def stop(self, grace_s: float) -> None:
        self._let_go()

    async def kill(self) -> None:
        self._let_go()

    def _let_go(self) -> None:
        """Stop using it; the server itself is left running, whatever happened."""
        self.exit_code = 0
        self.exited.set()


class KeyFromEnv:
    """A remote version's API key, read from its variable at each call (a rotated secret is used from
    the next request on). The key is never stored, logged or shown; only the variable's name is."""

    def __init__(self, variable: str | None) -> None:
        self.variable = variable

    def __call__(self) -> str | None:
        return os.environ.get(self.variable) if self.variable else None


class RemoteProber(Prober):
    """Ready when GET /v1/models answers (every OpenAI-compatible server has it, and it checks the
    key) and lists the served model."""

    health_path = "/v1/models"

    def __init__(self, url: str, key: KeyFromEnv, served_name: str, pin: Pin) -> None:
        super().__init__(url, Bearer(key), served_name, **prober_options(pin))
        self.url = url
        self.key = key

    def healthy(self, resp: httpx.Response) -> bool:
        if self.key.variable and not self.key():
            raise NotReadyYet(f"the environment variable {self.key.variable}, which holds the API key for "
                              f"{self.url}, is not set where Baton runs")
        if resp.status_code in (401, 403):
            raise NotReadyYet(f"the server at {self.url} refused the API key (HTTP {resp.status_code}); "
                              f"check {self.key.variable or 'the key variable (--api-key-env)'}")
        if resp.status_code != 200:
            return False
        try:
            served = [str(card.get("id")) for card in resp.json().get("data") or []]
        except (ValueError, AttributeError):
            raise NotReadyYet(f"{self.url}/v1/models did not answer an OpenAI model list") from None
        if self.served_name not in served:
            raise NotReadyYet(f"the server at {self.url} does not serve a model named '{self.served_name}' "
                              f"(it serves: {', '.join(served[:10]) or 'nothing'}); load it again with "
                              "--served-model NAME")
        return True
