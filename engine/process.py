"""One backend process: spawned under the guard in its own process group, stopped for sure.

Readiness, liveness and traffic live elsewhere; this module only starts, watches the exit of,
and ends processes.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from . import logfile

GUARD = Path(__file__).with_name("guard.py")
PID_LINE = "BATON_CHILD_PID="
PID_TIMEOUT_S = 30.0
GUARD_EXIT_S = 5.0  # how long the guard may take to follow its killed server out


class SpawnFailed(Exception):
    """The process could not be started, or exited before it said its pid."""


def describe_exit(code: int | None) -> str:
    if code is None:
        return "unknown exit status"
    if code > 128 and code - 128 in signal.valid_signals():
        return f"exit code {code} (killed by {signal.Signals(code - 128).name})"
    return f"exit code {code}"


class Server(Protocol):
    """What the supervisor drives: a local process (BackendProcess) or a remote server
    (engine/remote.py RemoteServer, which starts and ends nothing)."""

    pid: int | None
    exit_code: int | None
    exited: asyncio.Event

    async def spawn(self) -> None: ...

    async def wait_exit(self) -> int: ...

    @property
    def running(self) -> bool: ...

    async def stop(self, grace_s: float) -> None: ...

    async def kill(self) -> None: ...


class BackendProcess:
    def __init__(self, command: Sequence[str], env: dict[str, str], log_path: Path, nice: int) -> None:
        self.command = [sys.executable, str(GUARD), "--nice", str(nice), *command]
        self.env = env
        self.log_path = log_path
        self.pid: int | None = None  # the server; also its process group id
        self.exit_code: int | None = None
        self.exited = asyncio.Event()
        self._proc: asyncio.subprocess.Process | None = None

    async def spawn(self) -> None:
        """Start the guard and the server; returns once the server's pid is known."""
        fd = await asyncio.to_thread(logfile.open_for_append, self.log_path)
        try:
            self._proc = await asyncio.create_subprocess_exec(
                *self.command,
                stdin=asyncio.subprocess.PIPE,  # held open: EOF tells the guard the engine is gone
                stdout=asyncio.subprocess.PIPE,  # one line: the server's pid
                stderr=fd,  # the server writes its output straight to the log file
                env=self.env,
                start_new_session=True,
            )
        finally:
            os.close(fd)
        assert self._proc.stdout is not None
        try:
            line = await asyncio.wait_for(self._proc.stdout.readline(), PID_TIMEOUT_S)
        except TimeoutError:
            line = b""
        text = line.decode(errors="replace").strip()
        if not text.startswith(PID_LINE):
            await self.kill()
            raise SpawnFailed(f"the process exited before it started ({describe_exit(self.exit_code)})")
        self.pid = int(text.removeprefix(PID_LINE))

    async def wait_exit(self) -> int:
        """Wait for the guard (and so the server) to exit; sets `exited` and `exit_code`."""
        assert self._proc is not None
        code = await self._proc.wait()
        self.exit_code = code
        self.exited.set()
        return code

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def stop(self, grace_s: float) -> None:
        """SIGTERM the group, SIGKILL it after `grace_s`; return when no process of it is left."""
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            self._signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), grace_s)
            except TimeoutError:
                self._signal(signal.SIGKILL)
        await self._reap()

    async def kill(self) -> None:
        """SIGKILL the group at once: for a hung process, which would ignore SIGTERM."""
        if self._proc is None:
            return
        self._signal(signal.SIGKILL)
        await self._reap()

    async def _reap(self) -> None:
        proc = self._proc
        assert proc is not None
        try:
            code = await asyncio.wait_for(asyncio.shield(proc.wait()), GUARD_EXIT_S)
        except TimeoutError:  # a guard that does not follow its server out is killed as well
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            code = await proc.wait()
        self.exit_code = code if self.exit_code is None else self.exit_code
        self.exited.set()
        if proc.stdin:
            proc.stdin.close()
        await self._wait_group_gone()

    async def _wait_group_gone(self) -> None:
        """Wait until the kernel has torn down the server's group too, so that `stopped`
        means no process is left (a 3 GB process takes a moment to go)."""
        if not self.pid:
            return
        for _ in range(200):
            try:
                os.killpg(self.pid, 0)
            except ProcessLookupError:
                return
            await asyncio.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):  # it still exists: checked just above
            os.killpg(self.pid, signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        # Only while the guard lives: once it has exited it has ended the group itself, and the
        # group id may since belong to someone else. The guard forwards SIGTERM to the group;
        # SIGKILL cannot be forwarded, so it goes to the group directly, and the guard, alive,
        # reaps the server and exits. Killing the guard too would orphan the dead server, and a
        # zombie waits for PID 1 to reap it (about a second in a container), keeping the group
        # "alive" for _wait_group_gone.
        if self._proc is None or self._proc.returncode is not None:
            return
        if sig == signal.SIGKILL and self.pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)
