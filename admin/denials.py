"""Refusals of someone known, counted: one audit row per actor and minute, however many requests.

A user key calling the admin API is refused with 403 (and a user typing an admin command in the
chat is refused too), and each refusal used to be an audit row: a thousand requests pushed the
admin's own actions out of `/audit`. Now the first refusal of a minute writes a row, and the later
ones in that minute rewrite its detail with the count ("12 requests refused in this minute").
Writes of one row never overlap, so the count stored is the last one.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine import BatonError

log = logging.getLogger("baton.admin")

Insert = Callable[[str, str, dict[str, object], str, str], Awaitable[int]]  # audit row -> its id
Amend = Callable[[int, str], Awaitable[None]]  # row id, new detail


@dataclass
class _Minute:
    minute: int
    count: int = 0
    row: int | None = None
    writing: bool = False  # a write of this row is under way; it writes again if the count moved


def detail(count: int) -> str:
    return f"{count} request{'s' if count != 1 else ''} refused in this minute"


class Denials:
    def __init__(self, insert: Insert, amend: Amend, clock: Callable[[], float] = time.time) -> None:
        self._insert, self._amend, self._clock = insert, amend, clock
        self._open: dict[tuple[str, str], _Minute] = {}  # (actor, action) -> its current minute

    async def refused(self, actor: str, action: str, args: dict[str, object]) -> None:
        """Count one refusal of `actor`; `args` (where it was) are kept from the minute's first."""
        minute = int(self._clock() // 60)
        self._open = {k: m for k, m in self._open.items() if m.minute == minute or m.writing}
        current = self._open.get((actor, action))
        if current is None or current.minute != minute:
            current = self._open[(actor, action)] = _Minute(minute)
        current.count += 1
        if current.writing:
            return  # the write under way stores this count too
        current.writing = True
        try:
            written = -1
            while written != current.count:
                written = current.count
                if current.row is None:
                    current.row = await self._insert(actor, action, args, "refused", detail(written))
                else:
                    await self._amend(current.row, detail(written))
        except BatonError as exc:  # the refusals stand; only their count is missing
            log.warning("could not audit %s by %s: %s", action, actor, exc)
        finally:
            current.writing = False
