"""A backend's traffic: leases held by in-flight requests, counters, and revocation.

A lease is what lets a switch cut nothing: an answer keeps the backend that started it. When
that backend dies or hangs, its leases are revoked: each request's deadline is moved to now,
so the request stops waiting at once and is translated again on a ready version.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator


class Lease:
    def __init__(self) -> None:
        self.started_at = time.monotonic()
        self.revoked = ""  # why the backend was taken away from this request
        self._deadline: asyncio.Timeout | None = None

    def bind(self, deadline: asyncio.Timeout) -> None:
        """The request's stall deadline; revocation expires it."""
        self._deadline = deadline
        if self.revoked:
            self._expire()

    def revoke(self, reason: str) -> None:
        if not self.revoked:
            self.revoked = reason
            self._expire()

    def _expire(self) -> None:
        deadline = self._deadline
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())


class Traffic:
    def __init__(self) -> None:
        self.leases: set[Lease] = set()
        self.served = 0
        self.errors = 0
        self.idle = asyncio.Event()  # set while no request holds a lease
        self.idle.set()

    @property
    def in_flight(self) -> int:
        return len(self.leases)

    @contextlib.contextmanager
    def lease(self) -> Iterator[Lease]:
        lease = Lease()
        self.leases.add(lease)
        self.idle.clear()
        try:
            yield lease
        finally:
            self.leases.discard(lease)
            if not self.leases:
                self.idle.set()

    def revoke_all(self, reason: str) -> int:
        for lease in list(self.leases):
            lease.revoke(reason)
        return len(self.leases)
