"""Run an operator's change to completion even if whoever asked goes away (Stop in the chat, a
closed HTTP connection): a half-done change must not depend on the caller's task."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from engine import BatonError

log = logging.getLogger("baton.admin")
T = TypeVar("T")


async def to_completion(work: Awaitable[T], expected: tuple[type[BaseException], ...] = ()) -> T:
    task = asyncio.ensure_future(work)
    task.add_done_callback(lambda t: _consume(t, expected))  # if nobody is left to read its outcome
    return await asyncio.shield(task)


def _consume(task: asyncio.Future[Any], expected: tuple[type[BaseException], ...]) -> None:
    if task.cancelled() or (exc := task.exception()) is None or isinstance(exc, (BatonError, *expected)):
        return
    log.error("an admin change failed after its caller went away", exc_info=exc)
