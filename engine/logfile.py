"""A backend's output file: written by the process itself, capped by copy-and-truncate.

The backend's stdout and stderr are this file, opened for appending, so no reader task sits
between the process and the disk (a dead reader would let the pipe fill and block vLLM).
Functions here block on the file system: call them through `asyncio.to_thread`.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

BLOCK = 64 * 1024


def open_for_append(path: Path) -> int:
    """A descriptor in append mode: after a truncate, the writer's next line lands at 0."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def rotate_if_large(path: Path, max_bytes: int) -> bool:
    """Keep the file under `max_bytes`: move its content to `NAME.1` (replacing the older one)
    and truncate it in place. True if it rotated."""
    try:
        if path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    shutil.copyfile(path, path.with_name(path.name + ".1"))
    os.truncate(path, 0)
    return True


def tail(path: Path, n: int) -> list[str]:
    """The last `n` lines, reading backwards from the end (never the whole file); the rotated
    file supplies the rest when the current one is short."""
    lines = _tail_one(path, n)
    if len(lines) < n:
        lines = _tail_one(path.with_name(path.name + ".1"), n - len(lines)) + lines
    return lines


def _tail_one(path: Path, n: int) -> list[str]:
    if n <= 0:
        return []
    try:
        with open(path, "rb") as f:
            end = f.seek(0, os.SEEK_END)
            data = b""
            pos = end
            while pos > 0 and data.count(b"\n") <= n:
                step = min(BLOCK, pos)
                pos -= step
                f.seek(pos)
                data = f.read(step) + data
    except FileNotFoundError:
        return []
    text = data.decode("utf-8", "replace")
    return [line.rstrip("\r") for line in text.splitlines()][-n:]
