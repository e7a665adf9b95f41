"""Shadow traffic: a sample of routed answers is sent again to the shadow version, whose answer
nobody sees; it is compared with the answer the user got (chrF), with its errors and latency.

The copy starts only once the user's answer is complete and runs in the background, bounded
(BATON_SHADOW_MAX_IN_FLIGHT): nothing the shadow does can delay, change or fail a user's answer.
It is an ordinary pinned request to the shadow's own backend, under the usual lease and stall
deadlines, so a shadow that hangs is noticed and restarted like any version.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from . import metrics, scoring, translate
from .backend_http import WAITING
from .errors import BatonError
from .livestats import LiveStats, ShadowResult
from .router import Router
from .translate import BackendRequest, Chunk, Limits, TranslationResult
from .types import Deployment, VersionSpec

log = logging.getLogger("baton.shadow")

Own = Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]


@dataclass(frozen=True)
class ShadowStats:
    """The shadow and what its copies said since it started."""

    version: str
    percent: int
    samples: int  # copies that finished, well or not
    errors: int
    agreement: float | None  # mean chrF against the users' answers, 0-100
    p95_ms: float | None  # the shadow's total time per answer
    primary_p95_ms: float | None  # the users' answers' total time, over the same requests
    skipped: int  # sampled requests not copied: BATON_SHADOW_MAX_IN_FLIGHT copies were running


async def _discard(_: Chunk) -> None:
    """Nobody reads a shadow's answer while it streams; only its whole text is compared."""


class ShadowRunner:
    def __init__(self, router: Router, live: LiveStats, limits: Limits, max_in_flight: int, own: Own) -> None:
        self.router = router
        self.live = live
        self.limits = limits
        self.max_in_flight = max_in_flight
        self._own = own
        self._tasks: set[asyncio.Task[None]] = set()
        self._skipped = 0
        self._closed = False

    def started(self, version: str) -> None:
        """A new shadow: its statistics start from nothing."""
        self.live.forget_shadow(version)
        self._skipped = 0

    def stats(self, d: Deployment) -> ShadowStats | None:
        if not d.shadow:
            return None
        s = self.live.sample(d.shadow)
        return ShadowStats(d.shadow, d.shadow_percent, s.shadowed, s.shadow_errors, s.shadow_agreement,
                           s.shadow_p95_ms, s.primary_p95_ms, self._skipped)

    def offer(self, primary: TranslationResult, request_for: Callable[[VersionSpec], BackendRequest]) -> None:
        """Maybe copy a routed request that `primary` answered. Never raises, never waits."""
        d = self.router.deployment
        name = d.shadow
        if self._closed or not name or name == primary.version or random.random() * 100 >= d.shadow_percent:
            return
        if len(self._tasks) >= self.max_in_flight:
            self._skipped += 1
            metrics.SHADOW.labels(name, "skipped").inc()
            return
        copy = self._copy(name, primary, request_for)
        try:
            task = self._own(copy, f"shadow-{name}")
        except RuntimeError:  # the engine is closing: its task group takes no new work
            copy.close()
            log.warning("shadow copy to %s not started: the engine is closing", name)
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _copy(self, name: str, primary: TranslationResult,
                    request_for: Callable[[VersionSpec], BackendRequest]) -> None:
        start = time.perf_counter()
        WAITING.set(None)  # the copy runs in its own task: its time is nobody's request's
        try:
            route = self.router.pinned(name)
            # The shadow's own prompt template and sampling: what it would be sent if it served.
            result = await translate.stream(route, request_for(route.backend.spec), _discard, self.limits)
        except BatonError as exc:  # it failed, hung or was not ready: that is what the statistics are for
            log.info("shadow copy to %s failed: %s", name, exc)
            self._record(name, ShadowResult(self.live.now(), False, None, _ms(start), primary.total_ms))
            return
        agreement = await asyncio.to_thread(scoring.agreement, result.text, primary.text)
        metrics.SHADOW_AGREEMENT.labels(name).observe(agreement)
        self._record(name, ShadowResult(self.live.now(), True, agreement, result.total_ms, primary.total_ms))

    def _record(self, name: str, result: ShadowResult) -> None:
        metrics.SHADOW.labels(name, "ok" if result.ok else "failed").inc()
        if self.router.deployment.shadow == name:  # a copy that outlived its shadow says nothing of the next one
            self.live.shadowed(name, result)

    async def close(self) -> None:
        """Cancel the copies still running (the engine is stopping its backends)."""
        self._closed = True
        await asyncio.sleep(0)  # copies just offered start, so that cancelling them ends their coroutines
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1000
