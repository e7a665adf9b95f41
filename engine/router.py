"""Which backend serves a request: active / canary / standby failover; waiting when none is ready.

All routing state lives in `self.deployment` (one immutable value). A switch replaces it in
one assignment, and `pick` reads it without awaiting, so no lock is needed here.
"""
from __future__ import annotations

import random
import time
import zlib
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from .backend import Backend
from .errors import NoBackendAvailable, NotReady
from .pool import Pool
from .states import Desired, State
from .types import Deployment


@dataclass(frozen=True)
class RouteInfo:
    """What a caller may know of a route: plain values, never the live backend."""

    version: str
    role: str  # "active" | "canary" | "standby"
    failover_note: str = ""


@dataclass(frozen=True)
class Route:
    backend: Backend
    role: str
    failover_note: str = ""

    @property
    def info(self) -> RouteInfo:
        return RouteInfo(self.backend.name, self.role, self.failover_note)


@dataclass(frozen=True)
class WaitInfo:
    """What a waiting request is told: what is loading and for how long it has waited."""

    waited_s: float
    detail: str


def canary_bucket(conversation_id: str) -> int:
    """Stable 0..99 bucket: a conversation stays on the same side of a canary split. A request
    without a conversation gets a random bucket (an empty id would always land in bucket 0)."""
    if not conversation_id:
        return random.randrange(100)
    return zlib.crc32(conversation_id.encode()) % 100


Avoid = Collection[tuple[str, int]]  # (version, generation) pairs that already failed a request


class Router:
    def __init__(self, pool: Pool, wait_s: float) -> None:
        self.pool = pool
        self.wait_s = wait_s
        self.deployment = Deployment()

    def usable(self, name: str | None, avoid: Avoid = ()) -> Backend | None:
        b = self.pool.get(name)
        if b is None or b.state is not State.READY or b.desired is Desired.UNLOADED:
            return None
        return None if (b.name, b.generation) in avoid else b

    def pick(self, conversation_id: str, avoid: Avoid = ()) -> Route | None:
        d = self.deployment
        if d.canary and canary_bucket(conversation_id) < d.canary_percent:
            if b := self.usable(d.canary, avoid):
                return Route(b, "canary")
        if b := self.usable(d.active, avoid):
            return Route(b, "active")
        down = self.pool.get(d.active)
        why = f"{d.active} is {down.state.value}" if down else f"{d.active} is not loaded"
        for name in (d.previous, d.canary):
            if b := self.usable(name, avoid):
                return Route(b, "standby", f"{why}; answered by standby {name}")
        return None

    def pinned(self, name: str) -> Route:
        """A route to exactly this version, for evaluation: no canary, no failover, no waiting."""
        if (b := self.usable(name)) is None:
            down = self.pool.get(name)
            state = f"is {down.state.value}" if down else "is not loaded"
            raise NotReady(f"Version {name} {state}, so it cannot answer a request addressed to it.",
                           "Ask for the service's alias instead, or retry when /status shows it ready.")
        return Route(b, "pinned")

    def describe_wait(self) -> str:
        d = self.deployment
        if not d.active:
            return "No version is active yet: an operator must /load and /switch one."
        b = self.pool.get(d.active)
        if b is None:
            return f"Version {d.active} is not loaded."
        if b.state in (State.STARTING, State.WARMING) and b.started_at:
            return f"Version {d.active} is {b.state.value} ({time.monotonic() - b.started_at:.0f} s so far)."
        return f"Version {d.active} is {b.state.value}" + (f": {b.reason}" if b.reason else ".")

    async def acquire(self, conversation_id: str, on_wait: Callable[[WaitInfo], Awaitable[None]] | None = None,
                      avoid: Avoid = ()) -> Route:
        """A route to a ready backend, waiting (bounded) while none is ready."""
        route = self.pick(conversation_id, avoid)
        if route is not None:
            return route
        start = time.monotonic()
        while (waited := time.monotonic() - start) < self.wait_s:
            if on_wait:
                await on_wait(WaitInfo(waited, self.describe_wait()))
            await self.pool.wait_change(min(1.0, self.wait_s - waited))
            if (route := self.pick(conversation_id, avoid)) is not None:
                return route
        raise NoBackendAvailable(
            f"No model version could answer within {self.wait_s:.0f} s. {self.describe_wait()}",
            "Please try again in a minute; if this persists, ask an operator to check /status.",
        )
