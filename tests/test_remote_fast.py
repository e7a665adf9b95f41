"""Remote versions: a server that runs outside Baton (here tests/fake_vllm.py, started by the test as
its own process, with its own API key) is loaded, probed, routed to, failed over from and retried,
and never started or stopped by Baton. URLs outside BATON_ALLOWED_REMOTE are refused before any
request is sent.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from admin import render
from engine import Engine, InvalidArgument, NotFound, NotReady
from engine.states import State

from tests import chatkit as ck

from .conftest import ROOT, fake_model, fake_settings, loaded_engine
from .test_engine_fast import add_version, translate, wait_for

KEY_VAR = "BATON_TEST_REMOTE_KEY"  # named in BATON_REMOTE_KEY_ENVS by these tests' settings
KEY = "remote-secret-4f1c9a7e2b"
ADMIN = ("root", "root-password-1")
# Baton's own backends take ports from 31100-31199; the remote servers 31200-31399.
PORT_MIN, PORT_MAX = 31100, 31199


def _free_remote_port() -> int:
    for port in range(31200, 31400):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port in 31200-31399")


class RemoteServer:
    """tests/fake_vllm.py as a server Baton did not start, logging every request it gets."""

    def __init__(self, workdir: Path, served: str = "remote-m", key: str = KEY, port: int | None = None,
                 host: str = "127.0.0.1") -> None:
        self.model = workdir / f"remote-{served}"
        self.model.mkdir(parents=True, exist_ok=True)
        (self.model / "config.json").write_text("{}")
        (self.model / "fake.json").write_text('{"log_requests": true}')
        self.served, self.key, self.host = served, key, host
        self.port = port or _free_remote_port()
        self.log = workdir / f"remote-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> RemoteServer:
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.fake_vllm", "--host", self.host, "--port", str(self.port),
                 "--model", str(self.model), "--served-model-name", self.served],
                cwd=ROOT, env={**os.environ, "VLLM_API_KEY": self.key}, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:  # a bare connect, not a request: the request log stays the test's evidence
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return self
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the remote server did not start"
            time.sleep(0.05)

    def requests(self) -> list[str]:
        return [line for line in self.log.read_text().splitlines() if line.startswith("request:")]

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGKILL:
            self.proc.wait(10)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    async def answers(self) -> str:
        """A completion asked of the server directly, outside Baton."""
        async with httpx.AsyncClient(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}) as http:
            r = await http.post("/v1/completions", json={"model": self.served, "prompt": "hello there"}, timeout=10)
        r.raise_for_status()
        return str(r.json()["choices"][0]["text"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@contextlib.contextmanager
def remote(workdir: Path, **kw):
    server = RemoteServer(workdir, **kw).start()
    try:
        yield server
    finally:
        server.stop()


def remote_settings(tmp_path: Path, *allowed: str, **overrides):
    return fake_settings(tmp_path, allowed_remote=list(allowed), remote_key_envs=[KEY_VAR],
                         port_min=PORT_MIN, port_max=PORT_MAX, **overrides)


@contextlib.asynccontextmanager
async def engine_with(tmp_path: Path, *allowed: str, **overrides) -> AsyncIterator[Engine]:
    eng = await loaded_engine(remote_settings(tmp_path, *allowed, **overrides))
    try:
        yield eng
    finally:
        await eng.close()


async def load_remote(eng: Engine, name: str, server: RemoteServer, *, url: str | None = None) -> None:
    await eng.register(name, url=url or f"{server.url}/v1", served_name=server.served, api_key_env=KEY_VAR)
    await eng.load(name)
    await eng.wait_loaded(name)


async def no_secret_anywhere(eng: Engine) -> None:
    """The key is in no audit row and in no /status text (the variable's name may be)."""
    audit = await eng.audit(200)
    assert not [a for a in audit if KEY in f"{a.arguments} {a.detail}"]
    assert KEY not in render.status(await eng.status(), {})


@pytest.fixture
def key(monkeypatch):
    monkeypatch.setenv(KEY_VAR, KEY)


async def test_a_remote_version_serves_and_unloading_it_leaves_its_server_running(tmp_path, key):
    with remote(tmp_path) as server:
        async with engine_with(tmp_path, f"{server.url}/v1") as eng:
            await load_remote(eng, "r1", server)
            await eng.switch("r1")
            r = await translate(eng)
            assert r.version == "r1" and r.text.startswith("remote-m says:")
            st = (await eng.status()).version("r1")
            assert (st.state, st.url, st.pid, st.port) == ("ready", server.url, None, None)
            shown = render.status(await eng.status(), {})
            assert server.url in shown
            assert any(a.action == "load" and a.outcome == "ok" and server.url in a.detail
                       for a in await wait_audit(eng, "load", "ok"))
            with pytest.raises(NotFound, match="remote version.*no local log"):
                await eng.logs("r1")
            # Another version takes the traffic, then the remote one is unloaded: routing stops, the server lives.
            await add_version(eng, "v1", switch=True)
            assert await eng.unload("r1")
            assert eng.pool.get("r1") is None
            assert server.running and (await server.answers()).startswith("remote-m says:")
            await no_secret_anywhere(eng)


async def wait_audit(eng: Engine, action: str, outcome: str, timeout: float = 5) -> list:
    """Audit rows the supervisor writes off its path: poll until one of `action` with `outcome` is there."""
    deadline = time.monotonic() + timeout
    while True:
        events = await eng.audit(50)
        if any(a.action == action and a.outcome == outcome for a in events):
            return events
        assert time.monotonic() < deadline, [(a.action, a.outcome, a.detail) for a in events]
        await asyncio.sleep(0.05)


async def test_urls_outside_the_allowed_list_are_refused_before_any_request(tmp_path, key):
    with remote(tmp_path, served="a") as allowed, remote(tmp_path, served="b") as other:
        async with engine_with(tmp_path, f"{allowed.url}/v1") as eng:
            refused = {
                other.url: "not under an allowed base URL",  # another port
                f"http://127.0.0.1:{allowed.port}@127.0.0.1:{other.port}/": "user name or password",
                f"http://127.0.0.1:{allowed.port}/v1x": "not under an allowed base URL",
                f"http://127.0.0.1:{allowed.port}/v1/../../x": "'..' segments",
                f"http://127.0.0.1.evil:{allowed.port}/v1": "not under an allowed base URL",
                f"https://127.0.0.1:{allowed.port}/v1": "not under an allowed base URL",
                f"http://127.0.0.1:{allowed.port}/v1?next=http://127.0.0.1:{other.port}": "a query",
                f"file:///etc/passwd": "only http:// and https://",
            }
            for url, why in refused.items():
                with pytest.raises(InvalidArgument, match=why) as caught:
                    await eng.register("evil", url=url, served_name="b", api_key_env=KEY_VAR)
                assert f"Use a URL under {allowed.url}/v1" in str(caught.value) or "Give the server's base URL" in \
                    str(caught.value)
            assert (await eng.status()).versions == []  # nothing saved
            audit = await eng.audit(50)
            assert len([a for a in audit if a.action == "register" and a.outcome == "refused"]) == len(refused)
            await asyncio.sleep(0.5)  # anything sent would have arrived by now
            assert allowed.requests() == [] and other.requests() == []
        async with engine_with(tmp_path / "none") as eng:  # no BATON_ALLOWED_REMOTE: no remote version at all
            with pytest.raises(InvalidArgument, match="BATON_ALLOWED_REMOTE is empty"):
                await eng.register("r1", url=f"{allowed.url}/v1", served_name="a")
        assert allowed.requests() == []


async def test_a_remote_server_that_dies_fails_over_and_is_retried_until_it_answers(tmp_path, key):
    with remote(tmp_path) as server:
        async with engine_with(tmp_path, server.url) as eng:
            await add_version(eng, "v1", switch=True)
            await load_remote(eng, "r1", server, url=server.url)
            await eng.switch("r1")  # r1 active, v1 the ready standby
            r1 = eng.pool.get("r1")
            server.signal(signal.SIGKILL)
            await wait_for(lambda: r1.state is not State.READY, 3)
            for i in range(5):  # requests keep succeeding, on the standby
                r = await translate(eng, conv=f"c{i}")
                assert r.version == "v1" and r.role == "standby"
            st = (await eng.status()).version("r1")
            assert st.state in ("failed", "starting") and "stopped answering" in st.reason, st
            shown = render.status(await eng.status(), {})
            assert f"the server at {server.url} stopped answering" in shown and "retrying" in shown
            events = await wait_audit(eng, "crash", "failed")
            assert any(server.url in a.detail for a in events if a.action == "crash")
            server.start()  # the same port again: the version comes back by itself
            await wait_for(lambda: r1.state is State.READY, 15)
            assert (await translate(eng, conv="after")).version == "r1" and r1.restarts >= 1
            await wait_audit(eng, "restart", "ok")
            await no_secret_anywhere(eng)


async def test_a_frozen_remote_server_is_noticed_and_comes_back(tmp_path, key):
    with remote(tmp_path) as server:
        async with engine_with(tmp_path, server.url) as eng:
            await add_version(eng, "v1", switch=True)
            await load_remote(eng, "r1", server, url=server.url)
            await eng.switch("r1")
            r1 = eng.pool.get("r1")
            server.signal(signal.SIGSTOP)
            noticed = await wait_for(lambda: r1.state is not State.READY, 5)
            assert noticed <= eng.settings.liveness_interval_s + eng.settings.liveness_timeout_s + 0.5
            assert (await translate(eng)).version == "v1"
            await wait_audit(eng, "unhealthy", "failed")
            server.signal(signal.SIGCONT)
            await wait_for(lambda: r1.state is State.READY, 20)
            assert (await translate(eng, conv="after")).version == "r1"
            assert server.running  # frozen and thawed, never killed by Baton


async def test_the_api_key_comes_from_an_allowed_variable_only_and_is_never_shown(tmp_path, monkeypatch):
    with remote(tmp_path) as server:
        async with engine_with(tmp_path, server.url) as eng:
            with pytest.raises(InvalidArgument, match="'HOME' is not an environment variable.*BATON_REMOTE_KEY_ENVS"):
                await eng.register("r1", url=server.url, served_name=server.served, api_key_env="HOME")
            monkeypatch.delenv(KEY_VAR, raising=False)
            with pytest.raises(InvalidArgument, match=f"{KEY_VAR} is not set where Baton runs"):
                await eng.register("r1", url=server.url, served_name=server.served, api_key_env=KEY_VAR)
            with pytest.raises(InvalidArgument, match="takes no model path, vLLM flags or interpreter"):
                await eng.register("r1", fake_model(eng.settings, "r1"), url=server.url, served_name=server.served)
            with pytest.raises(InvalidArgument, match="--api-key-env is for a remote version only"):
                await eng.register("r1", fake_model(eng.settings, "r1"), api_key_env=KEY_VAR)
            # A wrong key: the load fails and says so, without the key.
            monkeypatch.setenv(KEY_VAR, "wrong-" + KEY)
            await eng.register("r1", url=server.url, served_name=server.served, api_key_env=KEY_VAR)
            await eng.load("r1")
            with pytest.raises(NotReady, match="refused the API key \\(HTTP 401\\); check " + KEY_VAR):
                await eng.wait_loaded("r1")
            # A served model the server does not have: said clearly.
            await eng.register("r2", url=server.url, served_name="nope", api_key_env=KEY_VAR)
            monkeypatch.setenv(KEY_VAR, KEY)
            await eng.load("r2")
            with pytest.raises(NotReady, match="does not serve a model named 'nope' \\(it serves: remote-m\\)"):
                await eng.wait_loaded("r2")
            # The right key, read from the variable at the next try: ready.
            await eng.load("r1")
            await eng.wait_loaded("r1")
            audit = await eng.audit(50)
            assert any(KEY_VAR in a.arguments for a in audit if a.action == "register")
            await no_secret_anywhere(eng)
            assert not [a for a in audit if "wrong-" in f"{a.arguments} {a.detail}"]


async def test_load_url_through_the_chat_the_admin_api_and_the_cli(tmp_path):
    """The real app: /load NAME --url in the chat, the admin API's LoadBody with url, `baton load --url`;
    /status shows where each version lives; the key is in no chat message or audit row."""
    with remote(tmp_path) as server:
        env = {**ck.fake_env(tmp_path / "app"), "BATON_PORT_MIN": str(PORT_MIN), "BATON_PORT_MAX": str(PORT_MAX),
               "BATON_ALLOWED_REMOTE": json.dumps([f"{server.url}/v1"]), "BATON_REMOTE_KEY_ENVS": json.dumps([KEY_VAR]),
               KEY_VAR: KEY}
        with ck.running_app(env, admin=ADMIN) as app:
            async with ck.chatting(app.url, *ADMIN) as chat:
                reply = await chat.reply(f"/load r1 --url {server.url}/v1 --served-model remote-m --api-key-env {KEY_VAR}")
                assert f"Loading `r1` (served at {server.url})" in reply
                await chat.wait_message(f"`r1` is ready after .* \\(served at {re.escape(server.url)}\\)", 30)
                assert "Switched" in await chat.reply("/switch r1")
                answer = await chat.reply("good morning")
                assert "remote-m says:" in answer and "**r1**" in answer
                status = await chat.reply("/status")
                assert f"| r1 | ready | serving | active | — | {server.url} |" in status
                assert "not under an allowed base URL" in await chat.reply(
                    f"/load evil --url http://127.0.0.1:{server.port + 1}/v1 --served-model remote-m")
                assert "no local log" in await chat.reply("/logs r1")
                admin_key = await ck.make_key(chat, "ci", "admin")

                async with httpx.AsyncClient(base_url=f"{app.url}/admin/v1", timeout=30,
                                             headers={"Authorization": f"Bearer {admin_key}"}) as http:
                    r = await http.post("/versions", json={"name": "r2", "url": server.url, "served_model": "remote-m",
                                                           "api_key_env": KEY_VAR})
                    assert r.status_code == 202 and r.json()["url"] == server.url and r.json()["port"] is None, r.text
                    r = await http.post("/versions", json={"name": "r3", "url": "http://127.0.0.1:1@evil/v1"})
                    assert r.status_code == 400 and "user name or password" in r.text, r.text

                cli = subprocess.run(
                    [sys.executable, "-m", "baton_cli", "load", "r4", "--url", f"{server.url}/v1", "--served-model",
                     "remote-m", "--api-key-env", KEY_VAR, "--wait", "--timeout", "30"],
                    cwd=ROOT, capture_output=True, text=True, timeout=60,
                    env={**{k: v for k, v in os.environ.items() if not k.startswith("BATON_")},
                         "BATON_URL": app.url, "BATON_API_KEY": admin_key})
                assert cli.returncode == 0 and f"r4 is ready (served at {server.url})" in cli.stdout, cli.stderr
                async def both_ready() -> str | None:
                    text = await chat.reply("/status")
                    return text if "| r2 | ready |" in text and "| r4 | ready |" in text else None

                status = await ck.wait_until(both_ready, 20, "r2 and r4 ready", interval=0.5)
                assert KEY not in status
            with contextlib.closing(sqlite3.connect(app.data_dir / "baton.db")) as db:
                leaks = db.execute("SELECT count(*) FROM steps WHERE output LIKE ? OR input LIKE ?",
                                   (f"%{KEY}%", f"%{KEY}%")).fetchone()[0]
                leaks += db.execute("SELECT count(*) FROM audit_events WHERE arguments LIKE ? OR detail LIKE ?",
                                    (f"%{KEY}%", f"%{KEY}%")).fetchone()[0]
                named = db.execute("SELECT count(*) FROM audit_events WHERE action = 'register' AND outcome = 'ok' "
                                   "AND arguments LIKE ?", (f"%{KEY_VAR}%",)).fetchone()[0]
            assert leaks == 0 and named == 3
        assert server.running and (await server.answers()).startswith("remote-m says:")


async def test_a_remote_server_that_never_answers_fails_after_the_startup_timeout(tmp_path, key):
    url = f"http://127.0.0.1:{_free_remote_port()}"  # allowed, but nothing listens there
    async with engine_with(tmp_path, url, startup_timeout_s=1) as eng:
        await eng.register("r1", url=url, served_name="m", api_key_env=KEY_VAR)
        await eng.load("r1")
        with pytest.raises(NotReady, match=f"the server at {url} did not answer within 1 s"):
            await eng.wait_loaded("r1")
        assert eng.pool.get("r1").gave_up  # never ready: not retried by itself, /load decides
