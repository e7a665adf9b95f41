"""The data directory is its owner's alone: no permission for the group or others on it or in it.

It holds the database (password and key hashes, the chat history), the files of the history and
the backends' logs. At start the process's umask becomes 077, so everything it creates from then
on is private (SQLite's -wal and -shm files take the database file's mode; the file store and the
log files are created through the umask), and what an earlier version left readable is tightened.
Runs once at import of the app, before the event loop starts.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

UMASK = 0o077


def make_private(data_dir: Path) -> None:
    os.umask(UMASK)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for root, dirs, files in os.walk(data_dir):  # symlinked directories are not followed
        for path in (Path(root, name) for name in [*dirs, *files]):
            if not path.is_symlink() and (mode := stat.S_IMODE(path.stat().st_mode)) & UMASK:
                path.chmod(mode & ~UMASK)  # the owner keeps what they had
