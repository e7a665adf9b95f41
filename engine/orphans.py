"""Backend process groups an earlier engine recorded and left behind (it was killed hard)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

from .backend import MARKER_ENV
from .store import Store


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


async def reap(store: Store, replica: str) -> list[int]:
    """End the process groups this replica recorded, after checking each process carries its
    engine's marker (a recorded pid may since belong to someone else)."""
    killed: list[int] = []
    for pgid, _version, marker in await store.list_processes(replica):
        for pid in await asyncio.to_thread(_pids_with_marker, marker):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed.append(pid)
        await store.forget_process(pgid)
    return killed
