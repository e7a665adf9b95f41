"""engine/cpu.py: CPU-bound work runs on a bounded pool of threads, one user's jobs beyond the
per-user limit wait their turn while other users' jobs run, and a cancelled caller's job keeps
its user's slot until it has really ended."""
from __future__ import annotations

import asyncio
import threading

import pytest

from engine.cpu import CpuPool
from tests import chatkit as ck


class Job:
    """A job that runs until released, saying when it started."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def __call__(self) -> str:
        self.started.set()
        assert self.release.wait(10)
        return "done"


@pytest.fixture
def pool():
    p = CpuPool(workers=2, per_user=1)
    yield p
    p.close()


async def test_a_users_second_job_waits_while_another_users_job_runs(pool):
    first, second, other = Job(), Job(), Job()
    tasks = [asyncio.ensure_future(pool.run("alice", first)), asyncio.ensure_future(pool.run("alice", second)),
             asyncio.ensure_future(pool.run("bob", other))]
    await ck.wait_until(lambda: first.started.is_set() and other.started.is_set(), 5, "alice's first and bob's job")
    assert not second.started.is_set()  # a worker is free, but alice has her one job running
    first.release.set()
    await ck.wait_until(second.started.is_set, 5, "alice's second job, once her first ended")
    second.release.set()
    other.release.set()
    assert await asyncio.gather(*tasks) == ["done"] * 3


async def test_a_cancelled_callers_job_keeps_the_slot_until_it_ends(pool):
    running, next_one = Job(), Job()
    cancelled = asyncio.ensure_future(pool.run("alice", running))
    await ck.wait_until(running.started.is_set, 5, "the first job to start")
    cancelled.cancel()
    waiting = asyncio.ensure_future(pool.run("alice", next_one))
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert not next_one.started.wait(0.2)  # the first job still runs on its thread
    running.release.set()
    await ck.wait_until(next_one.started.is_set, 5, "the next job, once the first really ended")
    next_one.release.set()
    assert await waiting == "done"


async def test_an_error_in_a_job_reaches_its_caller_and_frees_the_slot(pool):
    def broken() -> None:
        raise ValueError("unreadable")

    with pytest.raises(ValueError, match="unreadable"):
        await pool.run("alice", broken)
    assert await pool.run("alice", lambda: 42) == 42
