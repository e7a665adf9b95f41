"""Every backend's lifecycle, owned by one task group: reconcile observed toward desired.

For each loaded version one lifecycle task starts its process, watches it (exit, liveness
probe, stalls reported by requests), restarts it with backoff after a crash or a hang, and
drains and stops it once the operator no longer wants it. Any exception in a lifecycle lands
as `failed` with the reason, logged and audited: nothing ends silently. A remote version goes
through the same lifecycle with a server that is never started or stopped (engine/remote.py):
its "crash" is its server no longer answering, and its restart is waiting until it answers again.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from . import logfile, metrics
from .backend import Backend
from .pool import Pool
from .probe import NotReadyYet
from .process import Server, SpawnFailed, describe_exit
from .settings import Settings
from .states import ALIVE, Desired, State
from .store import Store

log = logging.getLogger("baton.supervisor")
SUPERVISOR = "supervisor"


async def first_set(events: list[asyncio.Event], timeout: float | None) -> bool:
    """Wait until any event is set; False if `timeout` ran out first."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        done, _ = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for w in waiters:
            w.cancel()


class Supervisor:
    def __init__(self, settings: Settings, store: Store, pool: Pool) -> None:
        self.settings = settings
        self.store = store
        self.pool = pool
        self.closing = False
        self._group: asyncio.TaskGroup | None = None
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lifecycles: dict[Backend, asyncio.Task[None]] = {}
        self._start_deadlines: dict[Backend, asyncio.Timeout] = {}
        self.drained: dict[Backend, bool] = {}

    # the owner -----------------------------------------------------------------
    async def start(self) -> None:
        started = asyncio.Event()
        self._runner = asyncio.create_task(self._run(started), name="baton-supervisor")
        self._runner.add_done_callback(_log_if_failed)
        await started.wait()

    async def _run(self, started: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            started.set()
            await self._stop.wait()

    def own(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run `coro` in the supervisor's task group; an exception in it is logged, never lost."""
        assert self._group is not None, "Supervisor.start() first"
        return self._group.create_task(_logged(coro, name), name=name)

    async def close(self) -> None:
        """Stop every process (no drain: the app is going away) and end the task group.
        Desired states are not touched, so the next start brings the same versions back."""
        self.closing = True
        tasks = list(self._lifecycles.values())
        for b in list(self._lifecycles):
            self.interrupt(b)
        if tasks:
            await asyncio.wait(tasks, timeout=self.settings.stop_grace_s + 10)
        for b, task in list(self._lifecycles.items()):  # a lifecycle that did not end in time
            task.cancel()
            if b.process is not None and b.process.running:
                await b.process.kill()
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner

    # what the engine asks for --------------------------------------------------
    def launch(self, b: Backend) -> None:
        """Start `b`'s lifecycle, or ask a running one to try a failed start again."""
        task = self._lifecycles.get(b)
        if task is not None and not task.done():
            b.retry = True
            b.wake()
            return
        self._lifecycles[b] = self.own(self._own(b), f"lifecycle-{b.name}")

    def interrupt(self, b: Backend) -> None:
        """Desire changed to unloaded (or the engine closes): stop whatever the lifecycle waits on."""
        b.wake()
        deadline = self._start_deadlines.get(b)
        if deadline is not None and not deadline.expired():
            deadline.reschedule(asyncio.get_running_loop().time())

    async def retired(self, b: Backend) -> bool:
        """Wait for `b`'s lifecycle to drain and stop it; True if its requests finished first."""
        task = self._lifecycles.get(b)
        if task is None or task.done():
            task = self.own(self._retire(b), f"retire-{b.name}")
        await asyncio.shield(task)
        return self.drained.pop(b, True)

    def wanted(self, b: Backend) -> bool:
        return not self.closing and b.desired is not Desired.UNLOADED

    # one lifecycle -------------------------------------------------------------
    async def _own(self, b: Backend) -> None:
        try:
            await self._lifecycle(b)
        except Exception as exc:  # noqa: BLE001 - lands as failed, logged and audited below
            reason = f"supervision failed ({type(exc).__name__}: {exc})"
            log.exception("lifecycle of %s failed", b.name)
            if b.process is not None:
                await b.process.kill()
            b.cell.cas(ALIVE, State.FAILED, reason)
            await self.audit("supervise", b.name, "error", reason)
            if not self.wanted(b):
                await self._retire(b)

    async def _lifecycle(self, b: Backend) -> None:
        s = self.settings
        backoff = s.restart_backoff_s
        while self.wanted(b):
            again = b.ever_ready
            error = await self._start_once(b)
            if error:
                if self.wanted(b):
                    await self.audit("restart" if again else "load", b.name, "failed", error)
                if not b.ever_ready:
                    # A recipe that never got ready is not retried by itself: /load or /unload decides.
                    while self.wanted(b) and not b.retry:
                        await self._nap(b, None)
                    continue
            else:
                detail = f"at {b.url}" if b.spec.remote else f"pid {b.pid}, port {b.port}"
                self.report("restart" if again else "load", b.name, "ok",
                                 f"ready again, {detail}" if again else f"ready in {b.ready_at_s:.1f} s, {detail}")
                verdict = await self._watch(b)
                if verdict is None:
                    break
                kind, why = verdict
                await self._fail(b, kind, why)
                if time.monotonic() - (b.ready_at or 0.0) > s.restart_backoff_max_s:
                    backoff = s.restart_backoff_s  # it ran well for a while: start the backoff over
            deadline = time.monotonic() + backoff
            while self.wanted(b) and (left := deadline - time.monotonic()) > 0:
                await self._nap(b, left)
            backoff = min(backoff * 2, s.restart_backoff_max_s)
        await self._retire(b)

    async def _nap(self, b: Backend, timeout: float | None) -> None:
        b.nudge.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(b.nudge.wait(), timeout)

    async def _start_once(self, b: Backend) -> str:
        """Spawn and wait until ready. '' when ready; else why not (the process is gone then)."""
        s = self.settings
        if b.state is State.FAILED and b.ever_ready:
            b.restarts += 1
        try:
            b.port = None if b.spec.remote else self.pool.free_port(keep=b.port)
            process = await b.new_process()
            # A remote version waited for after its server went away says so meanwhile.
            waiting = b.reason if b.spec.remote and b.ever_ready else ""
            if not b.cell.cas({State.STOPPED, State.FAILED}, State.STARTING, waiting):
                raise RuntimeError(f"cannot start from {b.state.value}")
            b.retry = False  # only now: until here a waiter must not read the old failure as final
            async with asyncio.timeout(s.startup_timeout_s) as deadline:
                self._start_deadlines[b] = deadline
                await process.spawn()
                self.own(self._watch_exit(b, process), f"exit-{b.name}")
                await self._record(b, process)
                assert b.prober is not None
                await b.prober.wait_healthy(s.health_interval_s, process.exited)
                await self._check_alive(b, process)
                await b.prober.check_context(b.spec.sampling.max_tokens)
                if not b.cell.cas(State.STARTING, State.WARMING):
                    raise NotReadyYet(f"start-up interrupted ({b.state.value})")
                await b.prober.warm_up()
            await self._check_alive(b, process)
            b.ready_at = time.monotonic()
            if not b.cell.cas(State.WARMING, State.READY):
                raise NotReadyYet(f"start-up interrupted ({b.state.value})")
            b.ever_ready = True
            return ""
        except TimeoutError:
            why = ("start-up interrupted: the version was unloaded" if not self.wanted(b) else
                   f"the server at {b.url} did not answer within {s.startup_timeout_s:.0f} s "
                   "(BATON_STARTUP_TIMEOUT_S)" if b.spec.remote else
                   f"not ready within {s.startup_timeout_s:.0f} s (BATON_STARTUP_TIMEOUT_S); the process was stopped.")
        except (NotReadyYet, SpawnFailed) as exc:
            why = str(exc)
        except Exception as exc:  # noqa: BLE001 - e.g. no such interpreter, too many open files, a bad listener
            log.warning("start of %s failed", b.name, exc_info=True)
            why = f"could not start ({type(exc).__name__}: {exc})"
        finally:
            self._start_deadlines.pop(b, None)
        if b.process is not None:
            await b.process.kill()
        if not b.cell.cas(ALIVE, State.FAILED, why):
            b.cell.explain(why)
        return why

    async def _check_alive(self, b: Backend, process: Server) -> None:
        if process.exited.is_set():
            raise NotReadyYet(await self._exit_reason(b, process))

    async def _exit_reason(self, b: Backend, process: Server, why: str = "") -> str:
        """Why a ready backend's server went away: its exit and last log lines, or for a remote
        server (which has no local process or log) what the probe saw."""
        if b.spec.remote:
            return f"the server at {b.url} stopped answering ({why or 'Baton let go of it'})"
        tail = await asyncio.to_thread(logfile.tail, b.log_path, 3)
        exited = f"process exited unexpectedly ({describe_exit(process.exit_code)}). Last log lines: {' | '.join(tail)}"
        return f"{why}; {exited}" if why else exited

    async def _watch_exit(self, b: Backend, process: Server) -> None:
        await process.wait_exit()
        b.wake()

    async def _watch(self, b: Backend) -> tuple[str, str] | None:
        """Watch a ready backend. None when it is no longer wanted; else (crash|unhealthy, why)."""
        s = self.settings
        process, prober = b.process, b.prober
        assert process is not None and prober is not None
        failures = 0
        while True:
            b.nudge.clear()
            if process.exited.is_set():
                return "crash", ""
            if not self.wanted(b):
                return None
            if b.stall:
                return "unhealthy", b.stall
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(b.nudge.wait(), s.liveness_interval_s)
                continue
            why, refused = await prober.live(s.liveness_timeout_s)
            if refused:
                # A live server never refuses a connection: it is dead or dying. A killed vLLM
                # refuses at once but takes a second to be torn down and seen to exit.
                return "crash", why
            if why:
                failures += 1
                if failures >= s.liveness_failures:
                    return "unhealthy", why
            elif not why:
                failures = 0
            await asyncio.to_thread(logfile.rotate_if_large, b.log_path, s.log_max_bytes)

    async def _fail(self, b: Backend, kind: str, why: str) -> None:
        """A ready backend crashed or stopped answering: move its traffic, end it, report it."""
        again = "retrying" if b.spec.remote else "restarting"  # a remote server is waited for, not started
        # Out of `ready` first: the router stops sending it traffic before the (slow) teardown.
        if kind == "unhealthy":
            b.cell.cas(State.READY, State.UNHEALTHY, why)
            metrics.UNHEALTHY.labels(b.name).inc()
        else:
            b.cell.cas(State.READY, State.FAILED, f"crashed; {again}")
            metrics.BACKEND_CRASHES.labels(b.name).inc()
        b.traffic.revoke_all("it hung" if kind == "unhealthy" else "it crashed")
        process = b.process
        assert process is not None
        await process.kill()  # a hung process ignores SIGTERM; a crashed one is only reaped; a remote one is let go
        if kind == "crash":
            why = await self._exit_reason(b, process, why)
            b.cell.explain(f"{why}; {again}")
        b.cell.cas(State.UNHEALTHY, State.FAILED, f"{why}; {again}")
        await self._forget(b)
        self.report("crash" if kind == "crash" else "unhealthy", b.name, "failed", why)

    async def _retire(self, b: Backend) -> None:
        """Drain (bounded, unless the engine closes), stop, and leave the pool."""
        drained = True
        process = b.process
        if not self.closing and b.cell.cas({State.READY, State.UNHEALTHY}, State.DRAINING):
            exited = process.exited if process else asyncio.Event()
            drained = (await first_set([b.traffic.idle, exited], self.settings.drain_timeout_s)
                       and not b.traffic.in_flight)
            if not drained:
                b.traffic.revoke_all("it was unloaded")
        b.cell.cas(ALIVE | {State.FAILED}, State.STOPPING)
        if process is not None:
            await process.stop(self.settings.stop_grace_s)
        b.cell.cas(State.STOPPING, State.STOPPED)
        await b.close_clients()
        await self._forget(b)
        self.drained[b] = drained
        self._lifecycles.pop(b, None)
        if not self.closing:
            self.pool.remove(b)
            await self.audit("stop", b.name, "ok", "drained" if drained else
                             f"the drain timeout ({self.settings.drain_timeout_s:g} s) ran out; "
                             "its requests went elsewhere")

    # records -------------------------------------------------------------------
    async def _record(self, b: Backend, process: Server) -> None:
        if process.pid:
            try:
                await self.store.record_process(process.pid, b.name, b.marker, self.settings.replica_id)
            except Exception:  # noqa: BLE001 - the guard is the first line of defence
                log.warning("could not record process %s of %s", process.pid, b.name, exc_info=True)

    async def _forget(self, b: Backend) -> None:
        if b.pid:
            try:
                await self.store.forget_process(b.pid)
            except Exception:  # noqa: BLE001 - a stale record is ended safely at the next start
                log.warning("could not forget process %s of %s", b.pid, b.name, exc_info=True)

    def report(self, action: str, name: str, outcome: str, detail: str) -> None:
        """Audit without waiting: a busy database must not delay watching a backend that was
        just restarted, or restarting one that just failed."""
        self.own(self.audit(action, name, outcome, detail), f"audit-{action}-{name}")

    async def audit(self, action: str, name: str, outcome: str, detail: str) -> None:
        log.log(logging.INFO if outcome == "ok" else logging.WARNING, "%s %s: %s %s", action, name, outcome, detail)
        try:
            await self.store.audit(SUPERVISOR, action, {"version": name}, outcome, detail)
        except Exception:  # noqa: BLE001 - supervision goes on without the database
            log.warning("audit write failed for %s %s", action, name, exc_info=True)


async def _logged(coro: Coroutine[Any, Any, None], name: str) -> None:
    """Keep the task group alive: a failing child is logged instead of cancelling its siblings."""
    try:
        await coro
    except Exception:  # noqa: BLE001 - logged with its traceback
        log.exception("background task %s failed", name)


def _log_if_failed(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("the supervisor stopped", exc_info=task.exception())

