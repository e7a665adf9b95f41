"""ONE version's backend: its recipe, port, observed state, current process and traffic.

The parts have one job each: `process` (spawn, group, stop), `probe` (readiness, liveness),
`traffic` (leases, counters). The supervisor drives them; the router reads `state`. A remote
version (engine/remote.py) has a URL instead of a port, and a server Baton does not start.
"""
from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .backend_env import backend_environment
from .backend_http import BackendClient
from .probe import Bearer, Prober
from .process import BackendProcess, Server
from .remote import KeyFromEnv, RemoteProber, RemoteServer
from .remote_address import Pin, PinnedResolver
from .settings import Settings
from .states import ALIVE, Desired, State, StateCell
from .traffic import Traffic
from .types import VersionSpec

MARKER_ENV = "BATON_BACKEND_MARKER"


@dataclass(frozen=True)
class Snapshot:
    name: str
    state: State
    desired: Desired
    pid: int | None
    port: int | None
    started_at: float | None
    ready_at: float | None
    in_flight: int
    served: int
    errors: int
    restarts: int
    reason: str


class Backend:
    def __init__(self, spec: VersionSpec, settings: Settings, port: int | None,
                 on_change: Callable[[Backend], None]) -> None:
        self.spec = spec
        self.settings = settings
        self.port = port
        self.desired = Desired.STANDBY
        self.cell = StateCell(lambda _state, _reason: on_change(self))
        self.traffic = Traffic()
        self.generation = 0  # one per process started: a request avoids the one that failed it
        self.restarts = 0
        self.ever_ready = False
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.process: Server | None = None
        self.prober: Prober | None = None
        self.client: BackendClient | None = None
        self.marker = ""
        # Set when anything the supervisor waits on happens: exit, a stall, a change of desire.
        self.nudge = asyncio.Event()
        self.stall = ""  # why a request gave up on this backend
        self.retry = False  # an operator asked to load a failed version again

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def state(self) -> State:
        return self.cell.state

    @property
    def reason(self) -> str:
        return self.cell.reason

    @property
    def url(self) -> str:
        return self.spec.url or f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def log_path(self) -> Path:
        return self.settings.log_dir / f"{self.spec.name}.log"

    @property
    def ready_at_s(self) -> float:
        """How long the current process took to get ready."""
        return (self.ready_at or 0.0) - (self.started_at or 0.0)

    def wake(self) -> None:
        self.nudge.set()

    def report_stall(self, why: str) -> None:
        """A request saw no progress from this backend in time: the supervisor checks it."""
        if self.state is State.READY and not self.stall:
            self.stall = why
            self.wake()

    @property
    def gave_up(self) -> bool:
        """Its start failed and nothing will try again by itself: a version that never got ready
        has a broken recipe (one that crashed after being ready is restarted with backoff)."""
        return self.state is State.FAILED and not self.ever_ready and not self.retry

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.spec.name, self.state, self.desired, self.pid, self.port if self.state in ALIVE else None,
            self.started_at, self.ready_at, self.traffic.in_flight, self.traffic.served, self.traffic.errors,
            self.restarts, self.reason,
        )

    # one process ---------------------------------------------------------------
    def command(self) -> list[str]:
        interpreter = str(self.spec.interpreter or self.settings.vllm_python)
        return [
            interpreter, "-m", self.settings.server_module,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--model", str(self.spec.model_path),
            "--served-model-name", self.spec.served_name,
            *self.spec.flags,
        ]

    async def new_process(self) -> Server:
        """A fresh process with a fresh API key (or, for a remote version, fresh clients of its
        server); the previous one's clients are closed."""
        await self.close_clients()
        self.generation += 1
        self.stall = ""
        self.started_at, self.ready_at = time.monotonic(), None
        if self.spec.remote:
            key, pin = KeyFromEnv(self.spec.api_key_env), Pin()
            self.process = RemoteServer(self.url, self.settings.allowed_remote, pin)
            self.prober = RemoteProber(self.url, key, self.spec.served_name, pin)
            # Pinned to the addresses checked at start.
            self.client = BackendClient(self.url, key, PinnedResolver(pin))
            return self.process
        api_key = secrets.token_hex(24)  # new for every process
        self.marker = secrets.token_hex(16)
        # The key goes in the environment, not argv: /proc/PID/cmdline is world-readable, environ is not.
        env = backend_environment(os.environ, extra=self.settings.backend_pass_env,
                                  withheld=self.settings.remote_key_envs,
                                  own={**self.settings.backend_env, MARKER_ENV: self.marker,
                                       "VLLM_API_KEY": api_key, "PYTHONUNBUFFERED": "1"})
        self.process = BackendProcess(self.command(), env, self.log_path, self.settings.backend_nice)
        self.prober = Prober(self.url, Bearer(lambda: api_key), self.spec.served_name)
        self.client = BackendClient(self.url, lambda: api_key)
        return self.process

    async def close_clients(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.prober is not None:
            await self.prober.close()
