"""The set of backends: load and unload in the background, supervise (restart on crash)."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

from . import metrics
from .backend import ALIVE, MARKER_ENV, Backend, StartupFailed, State
from .errors import Conflict, NotFound
from .settings import Settings
from .store import Store
from .types import VersionSpec

log = logging.getLogger("baton.pool")
SUPERVISOR = "supervisor"


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pids_with_marker(marker: str) -> list[int]:
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
    return found


class Pool:
    def __init__(self, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        self.backends: dict[str, Backend] = {}
        self._lifecycles: dict[str, asyncio.Task] = {}
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[Backend], None]] = []

    # observation --------------------------------------------------------------
    def get(self, name: str | None) -> Backend | None:
        return self.backends.get(name) if name else None

    def require(self, name: str) -> Backend:
        b = self.backends.get(name)
        if b is None:
            raise NotFound(f"Version '{name}' is not loaded.", f"Load it first with /load {name}.")
        return b

    def _on_change(self, backend: Backend) -> None:
        metrics.set_backend_state(backend.spec.name, backend.state.value)
        for listener in list(self.listeners):
            listener(backend)
        # Wake everyone waiting for a change, then arm a fresh event for the next one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    # loading ----------------------------------------------------------------
    def _free_port(self) -> int:
        taken = {b.port for b in self.backends.values()}
        for port in range(self.settings.port_min, self.settings.port_max + 1):
            if port not in taken and _port_is_free(port):
                return port
        raise Conflict(
            f"No free port in {self.settings.port_min}-{self.settings.port_max}.",
            "Unload a version or widen BATON_PORT_MIN/BATON_PORT_MAX.",
        )

    def load(self, spec: VersionSpec) -> Backend:
        """Start loading in the background and return at once."""
        current = self.backends.get(spec.name)
        if current is not None and current.state is not State.STOPPED:
            raise Conflict(
                f"Version '{spec.name}' is already {current.state.value}.",
                f"Wait for it, or /unload {spec.name} first." if current.state in ALIVE else f"/unload {spec.name} first.",
            )
        backend = Backend(spec, self.settings, self._free_port())
        backend.listeners.append(self._on_change)
        self.backends[spec.name] = backend
        self._lifecycles[spec.name] = asyncio.create_task(self._lifecycle(backend), name=f"lifecycle-{spec.name}")
        return backend

    async def wait_loaded(self, name: str) -> Backend:
        """Wait until the version is ready, or has failed (then raise StartupFailed)."""
        backend = self.require(name)
        while backend.state in (State.STARTING, State.WARMING, State.STOPPED):
            await self.wait_change(5)
        if backend.state is not State.READY:
            raise StartupFailed(backend.reason or backend.state.value)
        return backend

    async def _start_once(self, b: Backend) -> None:
        await b.spawn()
        if b.pid:
            with contextlib.suppress(Exception):  # best effort: the guard is the first line of defence
                await self.store.record_process(b.pid, b.spec.name, b.marker)
        await b.wait_ready()

    async def _lifecycle(self, b: Backend) -> None:
        """Owns the backend's process: start, wait for exit, restart with backoff after a crash."""
        name = b.spec.name
        backoff = self.settings.restart_backoff_s
        ever_ready = False
        while True:
            try:
                await self._start_once(b)
            except StartupFailed as exc:
                if b.state is not State.FAILED:
                    return  # unloaded during start-up
                await self._audit("load" if not ever_ready else "restart", name, "failed", str(exc))
                if not ever_ready:
                    return  # a version that never started is not retried: its recipe is broken
            else:
                if not ever_ready:
                    await self._audit("load", name, "ok", f"ready in {b.startup_s:.1f} s, pid {b.pid}, port {b.port}")
                else:
                    await self._audit("restart", name, "ok", f"ready again, pid {b.pid}, port {b.port}")
                ever_ready = True
                await b.wait_exited()
                if b.state is not State.FAILED:
                    return  # stopped on purpose
                metrics.BACKEND_CRASHES.labels(name).inc()
                await self._audit("crash", name, "failed", b.reason)
                uptime = time.monotonic() - (b.ready_at or time.monotonic())
                if uptime > self.settings.restart_backoff_max_s:
                    backoff = self.settings.restart_backoff_s
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.restart_backoff_max_s)
            if b.state is not State.FAILED:
                return
            b.port = self._free_port() if not _port_is_free(b.port) else b.port

    async def _audit(self, action: str, name: str, outcome: str, detail: str) -> None:
        log.info("%s %s: %s %s", action, name, outcome, detail)
        try:
            await self.store.audit(SUPERVISOR, action, {"version": name}, outcome, detail)
        except Exception as exc:  # noqa: BLE001 - supervision must go on without the database
            log.warning("audit write failed: %s", exc)

    # unloading --------------------------------------------------------------
    async def unload(self, name: str) -> bool:
        """Drain (bounded), then stop. True if every in-flight request finished first."""
        b = self.require(name)
        drained = await b.drain(self.settings.drain_timeout_s)
        await self._stop_now(name)
        return drained

    async def close(self) -> None:
        await asyncio.gather(*(self._stop_now(n) for n in list(self.backends)), return_exceptions=True)

    async def _stop_now(self, name: str) -> None:
        b = self.backends[name]
        await b.stop()
        task = self._lifecycles.pop(name, None)
        if task:  # it may be sleeping before a restart
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if b.pid:
            with contextlib.suppress(Exception):
                await self.store.forget_process(b.pid)
        if self.backends.get(name) is b:
            del self.backends[name]

    # orphans ----------------------------------------------------------------
    async def reap_stale(self) -> list[int]:
        """End process groups a previous engine recorded, after checking they carry its marker."""
        killed: list[int] = []
        for pgid, _version, marker in await self.store.list_processes():
            pids = await asyncio.to_thread(_pids_with_marker, marker)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            await self.store.forget_process(pgid)
        return killed
