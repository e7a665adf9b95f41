"""CPU-bound work off the serving event loop: parsing and rebuilding documents, and scoring.

A bounded pool of worker threads (BATON_CPU_WORKERS), and a per-user limit (BATON_CPU_PER_USER):
one user's jobs beyond it wait their turn, in order, before they reach the pool, so six tabs of
one user cannot take every worker from the others. Waiting rather than refusing: a document
dropped into the chat already shows "Reading…" until its turn, and each job is bounded by the
document limits (size, segments), so the wait is bounded too.

Threads rather than processes: the work reads and returns objects (a parsed document, its
segments) that a process pool would pickle both ways, and no single step of it holds the GIL
for long (engine/formats.py scans in linear time in short regex calls; .srt is parsed cue by cue;
python-docx and html.parser are Python code, which gives the GIL back every few milliseconds), so
the event loop keeps answering /healthz (benchmarks/hostile_bench.py measures it while six users
upload hostile 2 MB documents). One worker by default: the work is Python code, so under the GIL
a second thread parses no faster, and the loop waits longer for the GIL (p99 of /healthz 126 ms
with two workers, 75 ms with one, in that benchmark); and a worker hands the GIL back after 1 ms
instead of Python's 5 (p99 47-51 ms then, on a box with a load average near 7).
"""
from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")
# How long a worker may hold the GIL while the event loop waits for it (Python's default is 5 ms;
# the loop needs it several times per request, so a busy worker adds that much each time).
SWITCH_INTERVAL_S = 0.001


@dataclass
class _Gate:
    slots: asyncio.Semaphore
    holders: int = 0  # jobs waiting for a slot or in the pool; the gate is dropped at 0


class CpuPool:
    def __init__(self, workers: int, per_user: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="baton-cpu")
        sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))  # for the whole process
        self._per_user = per_user
        self._gates: dict[str, _Gate] = {}

    async def run(self, user: str, work: Callable[[], T]) -> T:
        """`work()` on a worker thread, once `user` has fewer than the per-user limit of jobs there.
        A caller cancelled while the job runs returns at once; the user's slot is given back only
        when the job has really ended, so cancelling and sending again cannot exceed the limit."""
        gate = self._gates.setdefault(user, _Gate(asyncio.Semaphore(self._per_user)))
        gate.holders += 1
        try:
            await gate.slots.acquire()
        except BaseException:
            self._leave(user, gate, release=False)
            raise
        loop = asyncio.get_running_loop()
        try:
            future = self._executor.submit(work)
        except BaseException:
            self._leave(user, gate, release=True)
            raise
        future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._leave, user, gate, True))
        return await asyncio.wrap_future(future)

    def _leave(self, user: str, gate: _Gate, release: bool) -> None:
        if release:
            gate.slots.release()
        gate.holders -= 1
        if gate.holders == 0 and self._gates.get(user) is gate:
            del self._gates[user]

    def close(self) -> None:
        """Jobs not started are dropped; a running one finishes on its thread, unawaited."""
        self._executor.shutdown(wait=False, cancel_futures=True)
