"""Two Baton replicas on one Postgres database, with remote versions whose servers the test starts
itself, outside Baton: real vLLM (tests/test_replicas_vllm.py) or the fake server (fast tests and
benchmarks/replicas_bench.py)."""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from . import chatkit as ck

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "BATON_REMOTE_KEY_TEST"  # where the replicas read the remote servers' key
ADMIN = ("root", "root-password-1")
AUTH_SECRET = secrets.token_urlsafe(48)  # one for every replica: a login through A works on B


@dataclass
class Remote:
    """An OpenAI-compatible server that Baton did not start."""

    name: str  # the version's name in Baton, and the model it serves
    port: int
    key: str
    command: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen = field(init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL its whole process group: vLLM's engine core is a child process."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def restart(self) -> None:
        """Start it; again after a kill: the same server on the same port (an orchestrator's restart)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def alive(self) -> bool:
        with contextlib.suppress(httpx.HTTPError):
            r = httpx.get(f"{self.url}/v1/models", headers={"Authorization": f"Bearer {self.key}"}, timeout=2)
            return r.status_code == 200
        return False


def start_remote(name: str, model: Path, port: int, key: str, log_dir: Path, *, vllm: bool) -> Remote:
    """`python -m vllm.entrypoints.openai.api_server` (or tests.fake_vllm) on 127.0.0.1:port."""
    python = ROOT / ".venv-vllm" / "bin" / "python" if vllm else Path(sys.executable)
    module = "vllm.entrypoints.openai.api_server" if vllm else "tests.fake_vllm"
    flags = ["--dtype", "float32", "--enforce-eager", "--max-model-len", "512"] if vllm else []
    command = [str(python), "-m", module, "--host", "127.0.0.1", "--port", str(port), "--model", str(model),
               "--served-model-name", name, *flags]
    env = {**os.environ, "VLLM_API_KEY": key, "PYTHONPATH": str(ROOT), "VLLM_CPU_KVCACHE_SPACE": "1",
           "VLLM_CPU_OMP_THREADS_BIND": "nobind", "OMP_NUM_THREADS": "1"}
    remote = Remote(name, port, key, command, env, log_dir / f"remote-{name}.log")
    remote.restart()
    return remote


def wait_remotes(remotes: list[Remote], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for r in remotes:
        while not r.alive():
            if r.proc.poll() is not None:
                raise RuntimeError(f"{r.name} exited with {r.proc.returncode}:\n{r.log_path.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{r.name} did not answer within {timeout} s:\n{r.log_path.read_text()[-3000:]}")
            time.sleep(0.5)


def replica_env(data_dir: Path, db_url: str, replica: str, remotes: list[Remote], **extra: str) -> dict[str, str]:
    """A replica that runs no process of its own: every version is remote."""
    return {
        "BATON_DATA_DIR": str(data_dir),
        "BATON_DATABASE_URL": db_url,
        "BATON_REPLICA_ID": replica,
        "BATON_RUN_LOCAL_VERSIONS": "false",
        "BATON_ALLOWED_REMOTE": "[" + ",".join(f'"{r.url}"' for r in remotes) + "]",
        "BATON_REMOTE_KEY_ENVS": f'["{KEY_ENV}"]',
        KEY_ENV: remotes[0].key,
        "CHAINLIT_AUTH_SECRET": AUTH_SECRET,
        "BATON_REQUEST_WAIT_S": "30",
        "BATON_LIVENESS_INTERVAL_S": "0.3",
        "BATON_RESTART_BACKOFF_S": "0.3",
        "BATON_RESTART_BACKOFF_MAX_S": "2",
        **extra,
    }


@contextlib.contextmanager
def replicas(root: Path, db_url: str, remotes: list[Remote], ids: tuple[str, ...] = ("a", "b"),
             **extra: str) -> Iterator[list[ck.App]]:
    """The replicas, started one after the other (the first creates the schema and the admin)."""
    apps: list[ck.App] = []
    try:
        for rid in ids:
            apps.append(ck.launch_app(replica_env(root / rid, db_url, rid, remotes, **extra), admin=ADMIN))
        yield apps
    finally:
        for app in apps:
            app.stop(timeout=60)


def admin_api(app: ck.App, key: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"{app.url}/admin/v1", headers={"Authorization": f"Bearer {key}"},
                             timeout=60)


async def load_remote(api: httpx.AsyncClient, remote: Remote) -> None:
    r = await api.post("/versions", json={"name": remote.name, "url": remote.url, "served_model": remote.name,
                                          "api_key_env": KEY_ENV})
    assert r.status_code == 202, r.text


async def serving(apps: list[ck.App], remotes: list[Remote], timeout: float) -> str:
    """An admin key made in the first replica's chat; every remote loaded through its admin API and
    ready on every replica (the others followed the loads); the first remote active. Returns the key."""
    async with ck.chatting(apps[0].url, *ADMIN) as chat:
        key = await ck.make_key(chat, "ops", "admin")
    async with admin_api(apps[0], key) as api:
        for remote in remotes:
            await load_remote(api, remote)
        for app in apps:
            await wait_states(app, {r.name: "ready" for r in remotes}, timeout)
        r = await api.post("/deployment/switch", json={"name": remotes[0].name})
        assert r.status_code == 200, r.text
    return key


async def wait_states(app: ck.App, states: dict[str, str], timeout: float) -> dict:
    """Until the replica's /healthz shows each version in its state."""
    async def seen() -> dict | None:
        _, body = await ck.healthz(app.url)
        return body if all(body["versions"].get(n) == s for n, s in states.items()) else None
    return await ck.wait_until(seen, timeout, f"{app.url} to show {states}")


async def applied(app: ck.App, generation: int, timeout: float = 5.0, interval: float = 0.005) -> float:
    """Seconds until the replica applies `generation` (its /healthz says so), polled every `interval`."""
    start = time.perf_counter()
    async with httpx.AsyncClient(base_url=app.url) as http:
        while True:
            body = (await http.get("/healthz")).json()
            if body["generation"] >= generation:
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise AssertionError(f"{app.url} still applies generation {body['generation']}, not {generation}")
            await asyncio.sleep(interval)
