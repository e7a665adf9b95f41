"""A throwaway Postgres cluster for tests and benchmarks (Debian's `postgresql`)."""
from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

POSTGRES_PORTS = range(31000, 31050)  # 31050-31099: backends of the apps tests run on it


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class Postgres:
    """A throwaway Postgres cluster (Debian's `postgresql`, `make install-postgres`) in a temporary
    directory, trusting local connections; `new_database()` gives each test its own database."""

    def __init__(self, bindir: Path, root: Path, port: int) -> None:
        self.bindir, self.root, self.port = bindir, root, port
        self.user = "postgres"
        self._names = itertools.count(1)

    def new_database(self) -> str:
        """A fresh, empty database; its SQLAlchemy URL works from any process on this machine."""
        name = f"baton_{next(self._names)}"
        subprocess.run([str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user,
                        "-d", "postgres", "-q", "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {name}"],
                       check=True, capture_output=True)
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{name}"


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: then the cluster belongs to the `postgres` user."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def installed() -> bool:
    return bool(_initdbs())


def _initdbs() -> list[str]:
    return sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parents[1].name))


@contextlib.contextmanager
def temp_postgres() -> Iterator[Postgres]:
    """A cluster of the newest installed Postgres, started, and removed afterwards."""
    bindir = Path(_initdbs()[-1]).parent
    # Not under pytest's basetemp: its 0700 parents would keep the postgres user out.
    root = Path(tempfile.mkdtemp(prefix="baton-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                                 "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"]),
                   check=True, capture_output=True)
    for port in (p for p in POSTGRES_PORTS if _free(p)):
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1"
        started = subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
                                               "-o", options, "-w", "-t", "30", "start"]), capture_output=True)
        if started.returncode == 0:
            break
    else:
        raise RuntimeError(f"no Postgres could start on a free port in {POSTGRES_PORTS}: {(root / 'log').read_text()}")
    try:
        yield Postgres(bindir, root, port)
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)
