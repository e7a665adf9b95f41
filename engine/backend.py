"""ONE backend subprocess (vLLM, or anything speaking its CLI and API): an explicit state machine.

starting --/health 200--> warming --1-token completion ok--> ready
ready --> draining (leases -> 0, bounded) --> stopping (SIGTERM, then SIGKILL) --> stopped
starting/warming/ready/draining --process exits--> failed --(pool restarts)--> starting
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import httpx
from openai import AsyncOpenAI

from .settings import Settings
from .types import VersionSpec

GUARD = Path(__file__).with_name("guard.py")
MARKER_ENV = "BATON_BACKEND_MARKER"


class State(str, Enum):
    STARTING = "starting"
    WARMING = "warming"
    READY = "ready"
    DRAINING = "draining"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


# The only place where a backend's state may change.
TRANSITIONS: dict[State, set[State]] = {
    State.STARTING: {State.WARMING, State.FAILED, State.STOPPING},
    State.WARMING: {State.READY, State.FAILED, State.STOPPING},
    State.READY: {State.DRAINING, State.FAILED, State.STOPPING},
    State.DRAINING: {State.STOPPING, State.FAILED},
    State.STOPPING: {State.STOPPED},
    State.FAILED: {State.STARTING, State.STOPPING, State.STOPPED},
    State.STOPPED: {State.STARTING},
}
ALIVE = {State.STARTING, State.WARMING, State.READY, State.DRAINING}


class StartupFailed(Exception):
    pass


@dataclass(frozen=True)
class Snapshot:
    name: str
    state: State
    pid: int | None
    port: int | None
    started_at: float | None
    ready_at: float | None
    in_flight: int
    served: int
    errors: int
    restarts: int
    reason: str
    last_line: str


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit status"
    if code > 128 and code - 128 in signal.valid_signals():
        return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
    return f"exit code {code}"


class Backend:
    def __init__(self, spec: VersionSpec, settings: Settings, port: int) -> None:
        self.spec = spec
        self.settings = settings
        self.port = port
        self.state = State.STOPPED
        self.api_key = ""
        self.marker = ""
        self.pid: int | None = None  # the server process (its process group id too)
        self.started_at: float | None = None
        self.ready_at: float | None = None
        self.exit_code: int | None = None
        self.reason = ""
        self.in_flight = 0
        self.served = 0
        self.errors = 0
        self.restarts = 0
        self.client: AsyncOpenAI | None = None
        self.ring: deque[str] = deque(maxlen=settings.log_ring_lines)
        self.log_path = settings.log_dir / f"{spec.name}.log"
        self.listeners: list[Callable[[Backend], None]] = []
        self._proc: asyncio.subprocess.Process | None = None
        self._pid_known = asyncio.Event()
        self._exited = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._killing = False
        self._tasks: set[asyncio.Task] = set()

    # state ------------------------------------------------------------------
    def _to(self, new: State, reason: str = "") -> None:
        if new not in TRANSITIONS[self.state]:
            raise RuntimeError(f"backend {self.spec.name}: {self.state.value} -> {new.value} is not allowed")
        self.state = new
        self.reason = reason
        for listener in list(self.listeners):
            listener(self)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def startup_s(self) -> float:
        return (self.ready_at or 0.0) - (self.started_at or 0.0)

    def snapshot(self) -> Snapshot:
        return Snapshot(
            self.spec.name, self.state, self.pid, self.port if self.state in ALIVE else None,
            self.started_at, self.ready_at, self.in_flight, self.served, self.errors, self.restarts,
            self.reason, self.ring[-1] if self.ring else "",
        )

    def log_tail(self, n: int) -> list[str]:
        return list(self.ring)[-n:] if n > 0 else []

    # leases -----------------------------------------------------------------
    @contextlib.contextmanager
    def lease(self) -> Iterator[None]:
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self._idle.set()

    # process ----------------------------------------------------------------
    def command(self) -> list[str]:
        interpreter = str(self.spec.interpreter or self.settings.vllm_python)
        return [
            self.settings.guard_python, str(GUARD),
            interpreter, "-m", self.settings.server_module,
            "--host", "127.0.0.1", "--port", str(self.port),
            "--model", str(self.spec.model_path),
            "--served-model-name", self.spec.served_name,
            *self.spec.flags,
        ]

    async def spawn(self) -> None:
        """Start the process; returns once its pid is known. Readiness is `wait_ready`."""
        if self.state is State.FAILED:
            self.restarts += 1
        self._to(State.STARTING)
        self.api_key = secrets.token_hex(24)  # new for every process
        self.marker = secrets.token_hex(16)
        self.exit_code, self.pid, self.ready_at = None, None, None
        self._killing = False
        self._pid_known.clear()
        self._exited.clear()
        self.started_at = time.monotonic()
        self.settings.log_dir.mkdir(parents=True, exist_ok=True)
        # The key goes in the environment, not argv: /proc/PID/cmdline is world-readable, environ is not.
        env = {**os.environ, **self.settings.backend_env, MARKER_ENV: self.marker, "VLLM_API_KEY": self.api_key,
               "PYTHONUNBUFFERED": "1"}
        self._proc = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=asyncio.subprocess.PIPE,  # held open: EOF tells the guard the engine is gone
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        if self.client:
            await self.client.close()
        self.client = AsyncOpenAI(base_url=f"{self.url}/v1", api_key=self.api_key, max_retries=0, timeout=600)
        self._spawn_task(self._read_output(self._proc))
        self._spawn_task(self._watch(self._proc))
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self._pid_known.wait()), asyncio.ensure_future(self._exited.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        for fut in _:
            fut.cancel()

    def _spawn_task(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _read_output(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        log = await asyncio.to_thread(open, self.log_path, "a", encoding="utf-8", buffering=1)
        try:
            async for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip()
                if line.startswith("BATON_CHILD_PID=") and self.pid is None:
                    self.pid = int(line.split("=", 1)[1])
                    self._pid_known.set()
                    continue
                self.ring.append(line)
                log.write(line + "\n")  # line-buffered append to a local file
        finally:
            log.close()

    async def _watch(self, proc: asyncio.subprocess.Process) -> None:
        code = await proc.wait()
        if proc is not self._proc:
            return
        self.exit_code = code
        self._exited.set()
        if self.state in ALIVE and not self._killing:
            tail = " | ".join(self.log_tail(3))
            self._to(State.FAILED, f"process exited unexpectedly ({describe_exit(code)}). Last log lines: {tail}")

    async def wait_ready(self) -> None:
        """Probe /health, then warm up with a 1-token completion. Raises StartupFailed, and
        a backend that does not get ready in time is stopped (a hang at start-up cleans up)."""
        try:
            await asyncio.wait_for(self._probe(), self.settings.startup_timeout_s)
        except asyncio.TimeoutError:
            raise await self._startup_failed(
                f"not ready within {self.settings.startup_timeout_s:.0f} s (BATON_STARTUP_TIMEOUT_S); the process was stopped."
            ) from None

    async def _probe(self) -> None:
        headers = {"Authorization": f"Bearer {self.api_key}"}
        async with httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10) as http:
            while True:
                self._check_starting()
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get("/health")).status_code == 200:
                        break
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._exited.wait(), self.settings.health_interval_s)
            self._check_starting()
            await self._check_context(http)
            self._to(State.WARMING)
            body = {"model": self.spec.served_name, "prompt": "warm-up", "max_tokens": 1, "temperature": 0}
            try:
                resp = await http.post("/v1/completions", json=body, timeout=None)
            except httpx.HTTPError as exc:
                raise await self._startup_failed(f"the warm-up request failed ({type(exc).__name__}: {exc})") from exc
            if resp.status_code != 200:
                raise await self._startup_failed(f"the warm-up request answered HTTP {resp.status_code}: {resp.text[:200]}")
        self._check_starting()
        self.ready_at = time.monotonic()
        self._to(State.READY)

    async def _check_context(self, http: httpx.AsyncClient) -> None:
        """A cap on answer length that the served context cannot hold would have every request
        refused: fail the load now, before the version can be switched to."""
        cap = self.spec.sampling.max_tokens
        if cap is None:
            return
        try:
            cards = (await http.get("/v1/models")).json().get("data") or [{}]
        except (httpx.HTTPError, ValueError):
            return  # a server without the model card: requests will tell
        context = cards[0].get("max_model_len")
        if isinstance(context, int) and cap >= context:
            raise await self._startup_failed(
                f"max_tokens {cap} leaves no room for a prompt in its context of {context} tokens; "
                f"load it again with a smaller --max-tokens or a larger --max-model-len."
            )

    def _check_starting(self) -> None:
        if self.state not in (State.STARTING, State.WARMING):
            raise StartupFailed(self.reason or f"start-up interrupted ({self.state.value})")

    async def wait_exited(self) -> None:
        await self._exited.wait()

    async def _startup_failed(self, why: str) -> StartupFailed:
        self._killing = True  # this exit is ours, not a crash
        await self._kill_group()  # observers of FAILED can rely on the process being gone
        if self.state in ALIVE:
            self._to(State.FAILED, why)
        return StartupFailed(why)

    # stopping ---------------------------------------------------------------
    async def drain(self, timeout: float) -> bool:
        """Stop taking new requests and wait for in-flight ones. True if all finished in time."""
        if self.state is State.READY:
            self._to(State.DRAINING)
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self) -> None:
        if self.state in (State.STOPPED, State.STOPPING):
            return
        self._to(State.STOPPING)
        await self._kill_group()
        self._to(State.STOPPED)

    async def _kill_group(self) -> None:
        """SIGTERM the server's group, SIGKILL it after the grace period, reap the guard."""
        proc = self._proc
        if proc is None or proc.returncode is not None:
            return
        self._signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.settings.stop_grace_s)
        except asyncio.TimeoutError:
            self._signal(signal.SIGKILL)
            await proc.wait()
        if proc.stdin:
            proc.stdin.close()
        await self._wait_group_gone()

    async def _wait_group_gone(self) -> None:
        """The guard has exited; wait until the kernel has torn down the server's group too,
        so that `stopped` means no process is left (a 3 GB process takes a moment to go)."""
        if not self.pid:
            return
        for _ in range(200):
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        # The guard forwards SIGTERM to the server's group once; SIGKILL cannot be forwarded.
        if sig == signal.SIGKILL and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
        if self._proc and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.send_signal(sig)
