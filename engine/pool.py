"""The set of backends in memory: one per loaded version, their ports, and change wake-ups."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable

from . import metrics
from .backend import Backend
from .errors import Conflict, NotFound
from .settings import Settings
from .types import VersionSpec

log = logging.getLogger("baton.pool")


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class Pool:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.backends: dict[str, Backend] = {}
        self._changed = asyncio.Event()
        self.listeners: list[Callable[[Backend], None]] = []

    def get(self, name: str | None) -> Backend | None:
        return self.backends.get(name) if name else None

    def require(self, name: str) -> Backend:
        b = self.backends.get(name)
        if b is None:
            raise NotFound(f"Version '{name}' is not loaded.", f"Load it first with /load {name}.")
        return b

    def add(self, spec: VersionSpec) -> Backend:
        """A new backend for `spec` (no process yet; no port for a remote version). The caller has
        checked none is alive."""
        backend = Backend(spec, self.settings, None if spec.remote else self.free_port(), self._on_change)
        self.backends[spec.name] = backend
        self._on_change(backend)
        return backend

    def remove(self, backend: Backend) -> None:
        if self.backends.get(backend.name) is backend:
            del self.backends[backend.name]
            self._on_change(backend)

    def free_port(self, keep: int | None = None) -> int:
        """`keep` if it is still free (a restart keeps its port), else the first free one."""
        taken = {b.port for b in self.backends.values()}
        if keep is not None and _port_is_free(keep):
            return keep
        for port in range(self.settings.port_min, self.settings.port_max + 1):
            if port not in taken and _port_is_free(port):
                return port
        raise Conflict(
            f"No free port in {self.settings.port_min}-{self.settings.port_max}.",
            "Unload a version or widen BATON_PORT_MIN/BATON_PORT_MAX.",
        )

    def _on_change(self, backend: Backend) -> None:
        metrics.set_backend_state(backend.name, backend.state.value)
        for listener in list(self.listeners):
            try:
                listener(backend)
            except Exception:  # noqa: BLE001 - an observer's bug must not stop the state machine
                log.exception("a listener failed on %s becoming %s", backend.name, backend.state.value)
        # Wake everyone waiting for a change, then arm a fresh event for the next one.
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_change(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)
