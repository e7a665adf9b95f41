"""Refusals of someone known, counted: one audit row per actor and minute, however many requests.

A user key calling the admin API is refused with 403 (and a user typing an admin command in the
chat is refused too), and each refusal used to be an audit row: a thousand requests pushed the
admin's own actions out of `/audit`. Now the first refusal of a minute writes a row, and the later
ones in that minute rewrite its detail with the count ("12 requests refused in this minute").
Writes of one row never overlap, so the count stored is the last one, and each refusal returns
once a write has stored its count.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from engine import BatonError

log = logging.getLogger("baton.admin")

Insert = Callable[[str, str, dict[str, object], str, str], Awaitable[int]]  # audit row -> its id
Amend = Callable[[int, str], Awaitable[None]]  # row id, new detail


@dataclass
class _Minute:
    minute: int
    count: int = 0
    written: int = 0  # the count the row holds
    row: int | None = None
    writing: bool = False  # a write of this row is under way; it writes again if the count moved
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


def detail(count: int) -> str:
    return f"{count} request{'s' if count != 1 else ''} refused in this minute"


class Denials:
    def __init__(self, insert: Insert, amend: Amend, clock: Callable[[], float] = time.time) -> None:
        self._insert, self._amend, self._clock = insert, amend, clock
        self._open: dict[tuple[str, str], _Minute] = {}  # (actor, action) -> its current minute

    async def refused(self, actor: str, action: str, args: dict[str, object]) -> None:
        """Count one refusal of `actor`, and return once the audit holds it; `args` (where it was)
        are kept from the minute's first."""
        minute = int(self._clock() // 60)
        self._open = {k: m for k, m in self._open.items() if m.minute == minute or m.writing}
        current = self._open.get((actor, action))
        if current is None or current.minute != minute:
            current = self._open[(actor, action)] = _Minute(minute)
        current.count += 1
        mine = current.count
        if current.writing:  # the write under way stores this count too
            async with current.changed:
                await current.changed.wait_for(lambda: current.written >= mine or not current.writing)
            return
        current.writing = True
        try:
            while current.written != current.count:
                count = current.count
                if current.row is None:
                    current.row = await self._insert(actor, action, args, "refused", detail(count))
                else:
                    await self._amend(current.row, detail(count))
                async with current.changed:
                    current.written = count
                    current.changed.notify_all()
        except BatonError as exc:  # the refusals stand; only their count is missing
            log.warning("could not audit %s by %s: %s", action, actor, exc)
        finally:
            async with current.changed:
                current.writing = False
                current.changed.notify_all()
