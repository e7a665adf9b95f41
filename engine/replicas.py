"""Several app replicas on one Postgres database agreeing on the deployment.

Every deployment change bumps a generation in its own transaction and sends it on a `NOTIFY`
channel (engine/store.py). Each replica `LISTEN`s on a connection of its own; on a
notification, after every (re)connect and on a slow poll it reloads the deployment and applies
it (`Engine.follow`). One applier task does the applying, so a burst of notifications costs one
reload, and a lost connection costs at most a poll interval. Each replica also writes a
heartbeat with the generation it serves, which `/status` shows.

SQLite is one box with one app: none of this runs there.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import make_url

from .settings import Settings
from .store import NOTIFY_CHANNEL, Store
from .types import ReplicaRecord

log = logging.getLogger("baton.replicas")

RECONNECT_MAX_S = 5.0


@dataclass(frozen=True)
class ReplicaView:
    """A replica as /status shows it."""

    id: str
    generation: int
    heartbeat_age_s: float
    started_at: datetime | None
    this: bool  # the replica answering
    converged: bool  # serves the newest generation
    silent: bool  # no heartbeat for three intervals: stopped, or cut off from the database


def asyncpg_dsn(url: str) -> str:
    """The SQLAlchemy URL as libpq-style DSN for asyncpg's own connection."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


class Replicas:
    def __init__(self, settings: Settings, store: Store, generation: Callable[[], int],
                 follow: Callable[[], Awaitable[bool]], after_beat: Callable[[], Awaitable[None]],
                 own: Callable[[Coroutine[Any, Any, None], str], asyncio.Task[None]]) -> None:
        self.settings = settings
        self.store = store
        self.id = settings.replica_id
        self._generation = generation  # the one this replica serves
        self._follow = follow
        self._after_beat = after_beat  # what needs a live replica to notice a silent one (a rollout's runner)
        self._own = own
        self._wake = asyncio.Event()  # a notification: reload
        self._moved = asyncio.Event()  # this replica applied a change: beat now
        self._tasks: list[asyncio.Task[None]] = []
        self.started_at = datetime.now(UTC)
        self.enabled = store.engine.dialect.name == "postgresql"

    async def start(self) -> None:
        if not self.enabled:
            return
        await self._beat()  # visible in /status from the first moment
        for coro, name in ((self._listen(), "replica-listen"), (self._apply(), "replica-apply"),
                           (self._heartbeat(), "replica-heartbeat")):
            self._tasks.append(self._own(coro, name))

    async def close(self) -> None:
        await asyncio.sleep(0)  # a loop not yet started is then cancelled inside (its coroutine awaited)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.enabled:
            with contextlib.suppress(Exception):  # the database may be what is gone; the row then ages out
                await self.store.leave(self.id)

    async def view(self) -> list[ReplicaView]:
        if not self.enabled:
            return []
        now = datetime.now(UTC)
        # This replica's own row may be up to a heartbeat old: what it applies now is known here.
        records = [replace(r, generation=self._generation()) if r.id == self.id else r
                   for r in await self.store.list_replicas()]
        newest = max((r.generation for r in records), default=0)
        newest = max(newest, await self.store.generation())
        return [_view(r, now, newest, self.id, self.silent_after_s) for r in records]

    @property
    def silent_after_s(self) -> float:
        return 3 * self.settings.replica_heartbeat_s

    async def silence(self, replica_id: str) -> float | None:
        """How long `replica_id` has been silent (inf: it left, or never beat); None while it beats."""
        record = next((r for r in await self.store.list_replicas() if r.id == replica_id), None)
        age = _heartbeat_age(record, datetime.now(UTC)) if record is not None else float("inf")
        return age if age > self.silent_after_s else None

    # the loops -----------------------------------------------------------------------------
    async def _listen(self) -> None:
        """Hold a LISTEN connection, connecting again (with backoff) whenever it is lost."""
        delay = self.settings.replica_poll_s / 10
        while True:
            try:
                await self._listen_once()
                delay = self.settings.replica_poll_s / 10
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("replica %s: the LISTEN connection failed (%s); again in %.1f s", self.id, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)

    async def _listen_once(self) -> None:
        """One connection's life. After it connects, catch up: notifications sent while no
        connection listened are lost."""
        lost = asyncio.Event()
        conn = await asyncpg.connect(asyncpg_dsn(self.store.url), timeout=5,  # named in pg_stat_activity
                                     server_settings={"application_name": f"baton-listen {self.id}"})
        try:
            conn.add_termination_listener(lambda _c: lost.set())
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            self._wake.set()
            while not lost.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(lost.wait(), self.settings.replica_poll_s)
                if not lost.is_set():  # a silently dropped connection: ask it something
                    await asyncio.wait_for(conn.fetchval("SELECT 1"), 5)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5)

    async def _apply(self) -> None:
        """Reload and apply on each wake-up, and at least every poll interval."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.replica_poll_s)
            self._wake.clear()
            try:
                if await self._follow():
                    self.moved()
            except Exception:  # noqa: BLE001 - the next notification or poll tries again
                log.warning("replica %s could not apply the deployment", self.id, exc_info=True)

    def moved(self) -> None:
        """This replica applies a new generation (its own change, or one it followed): say so at
        once rather than at the next heartbeat."""
        self._moved.set()

    async def _heartbeat(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._moved.wait(), self.settings.replica_heartbeat_s)
            self._moved.clear()
            try:
                await self._beat()
            except Exception:  # noqa: BLE001 - a missed beat shows as an older one in /status
                log.warning("replica %s could not write its heartbeat", self.id, exc_info=True)
                continue
            try:
                await self._after_beat()
            except Exception:  # noqa: BLE001 - the next beat tries again
                log.warning("replica %s: a check after its heartbeat failed", self.id, exc_info=True)

    async def _beat(self) -> None:
        await self.store.beat(self.id, self._generation(), self.started_at)


def _heartbeat_age(r: ReplicaRecord, now: datetime) -> float:
    return (now - r.heartbeat_at).total_seconds() if r.heartbeat_at else float("inf")


def _view(r: ReplicaRecord, now: datetime, newest: int, this: str, silent_after: float) -> ReplicaView:
    age = _heartbeat_age(r, now)
    return ReplicaView(r.id, r.generation, age, r.started_at, r.id == this, r.generation >= newest,
                       age > silent_after)
