"""Follow one version's load from the first spawn to ready or failed, for a live progress view."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from engine import Engine, VersionStatus

Phase = Literal["loading", "ready", "failed", "gone"]
LOADING_STATES = {"starting", "warming"}


@dataclass(frozen=True)
class LoadProgress:
    name: str
    version: VersionStatus | None
    elapsed_s: float
    phase: Phase

    @property
    def done(self) -> bool:
        return self.phase != "loading"


def _phase(v: VersionStatus | None, seen_alive: bool) -> Phase:
    if v is None:
        return "gone"  # its recipe was deleted: nothing left to follow
    if v.state == "ready":
        return "ready"
    if v.state == "failed":
        return "failed"
    if v.state in LOADING_STATES:
        return "loading"
    # Right after engine.load() the backend exists but its lifecycle task has not spawned
    # the process yet: it reads "stopped" for an instant. Only after it was alive does
    # "stopped" (or draining/stopping/registered) mean someone unloaded it.
    if v.state == "stopped" and not seen_alive:
        return "loading"
    return "gone"


async def watch_load(engine: Engine, name: str, *, interval_s: float = 1.0) -> AsyncIterator[LoadProgress]:
    """Yield the version's progress about every `interval_s` and at once on each state change,
    ending with a final item whose phase is ready, failed or gone."""
    changed = asyncio.Event()

    def on_change(backend) -> None:  # called synchronously by the engine on every transition
        if backend.spec.name == name:
            changed.set()

    engine.pool.listeners.append(on_change)
    start = time.monotonic()
    seen_alive = False
    try:
        while True:
            changed.clear()  # before reading, so a change during the read is not lost
            v = (await engine.status()).version(name)
            seen_alive = seen_alive or (v is not None and v.state in LOADING_STATES)
            item = LoadProgress(name, v, time.monotonic() - start, _phase(v, seen_alive))
            yield item
            if item.done:
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(changed.wait(), interval_s)
    finally:
        with contextlib.suppress(ValueError):
            engine.pool.listeners.remove(on_change)
