"""Drive the real Baton chat from tests: launch the Chainlit app as a subprocess, log in over
HTTP, and talk to it over Chainlit's websocket protocol like the browser does.

Used by the fast tests (fake vLLM) and, with another environment, by the real-vLLM ones:
`launch_app(env=...)` takes the BATON_* settings, so the same scenario runs on either.

Chainlit 2.12's protocol, as its frontend speaks it:
- POST /login (form: username, password) sets the `access_token` cookie;
- socket.io on path /ws/socket.io, with that cookie on the handshake and
  auth={sessionId, clientType, userEnv, chatProfile, threadId}; then emit
  "connection_successful" (which runs on_chat_start, or on_chat_resume for a threadId);
- a message is "client_message" {message: StepDict, fileReferences}; a popup command
  sets message.command;
- the server answers with new_message / update_message / stream_start / stream_token /
  delete_message / task_start / task_end / set_commands / chat_settings / action events.
"""
from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import socketio
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
# Where an answer's footer starts: its language pair ("**English → French** (detected, 77% sure) · "),
# when it has one, then its attribution (or where an answer from translation memory came from).
FOOTER_RE = re.compile(r"(?:^|\n\n)(?:\*\*[^*\n]* → [^*\n]*\*\*[^\n]* · )?_(?:Translated by|📚 From translation memory)")


def translation_of(output: str) -> str:
    """An answer's text without its footer ('' when no text came back)."""
    found = FOOTER_RE.search(output)
    return output[:found.start()] if found else output


ATTRIBUTION_RE = re.compile(r"_Translated by \*\*([^*]+)\*\* \((\w+)\) in ([\d.]+) s")
KEY_RE = re.compile(r"baton-[A-Za-z0-9_-]{20,}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_env(data_dir: Path) -> dict[str, str]:
    """Settings for a Baton whose backends are tests/fake_vllm.py (ready in under a second)."""
    return {
        "BATON_DATA_DIR": str(data_dir),
        "BATON_VLLM_PYTHON": sys.executable,
        "BATON_SERVER_MODULE": "tests.fake_vllm",
        "BATON_REQUEST_WAIT_S": "20",
        "BATON_STOP_GRACE_S": "3",
        "BATON_DRAIN_TIMEOUT_S": "10",
    }


# A vLLM start-up takes about a minute on a 2-core machine; a busy one may take a few.
VLLM_STARTUP_TIMEOUT_S = 300


def vllm_env(data_dir: Path) -> dict[str, str]:
    """Settings for a Baton on real vLLM (.venv-vllm), CPU-sized."""
    return {
        "BATON_DATA_DIR": str(data_dir),
        "BATON_VLLM_PYTHON": str(ROOT / ".venv-vllm" / "bin" / "python"),
        "BATON_REQUEST_WAIT_S": "180",
        "BATON_STARTUP_TIMEOUT_S": str(VLLM_STARTUP_TIMEOUT_S),
    }


def make_fake_model(data_dir: Path, name: str, **knobs: Any) -> Path:
    """A model directory the fake server accepts; knobs go to its fake.json."""
    path = data_dir / "models" / name
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text("{}")
    (path / "fake.json").write_text(json.dumps(knobs))
    return path


@dataclass
class App:
    url: str
    port: int
    data_dir: Path
    env: dict[str, str]
    proc: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM (Chainlit's shutdown hook closes the engine), SIGKILL if it hangs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


# What Chainlit reads from its working directory (its app root), linked from the repo; `tests`
# lets the app start tests/fake_vllm.py backends (`python -m tests.fake_vllm`) from there.
APP_ROOT_ITEMS = (".chainlit", "public", "chainlit.md", "tests")


@contextlib.contextmanager
def running_app(env: dict[str, str], **options: Any) -> Iterator[App]:
    """launch_app for the body of a `with` (a module fixture's), stopped after it."""
    app = launch_app(env, **options)
    try:
        yield app
    finally:
        app.stop(timeout=60)


def app_root(data_dir: Path) -> Path:
    """The app's working directory: the repo's Chainlit files and nothing else, so neither Chainlit
    (which loads `.env` from its cwd into the environment) nor engine.Settings / ChatConfig (which
    read `.env` from the cwd) can see a developer's `.env` in the repo."""
    run = data_dir / "app-cwd"
    run.mkdir(parents=True, exist_ok=True)
    for item in APP_ROOT_ITEMS:
        link = run / item
        if not link.is_symlink():
            link.symlink_to(ROOT / item)
    assert not (run / ".env").exists()
    return run


def launch_app(env: dict[str, str], *, admin: tuple[str, str] = ("root", "root-password-1"),
               port: int | None = None, timeout: float = 120) -> App:
    """Start `chainlit run <repo>/app.py` the way it is deployed and wait until /healthz answers.
    Only `env` configures it: the app runs from app_root(), with no BATON_* or CHAINLIT_* variable
    of the caller's, and without CI (under CI=true Chainlit replaces OPENAI_API_KEY with a fake one)."""
    port = port or free_port()
    data_dir = Path(env["BATON_DATA_DIR"])
    data_dir.mkdir(parents=True, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items()
                if k != "CI" and not k.startswith(("BATON_", "CHAINLIT_"))}
    full_env.update({"BATON_ADMIN_USER": admin[0], "BATON_ADMIN_PASSWORD": admin[1], **env})
    log_path = data_dir / f"app-{port}.log"
    log_file = open(log_path, "ab")
    # The chainlit script of the interpreter running the tests (the app venv).
    chainlit = Path(sys.executable).with_name("chainlit")
    proc = subprocess.Popen(
        [str(chainlit), "run", str(ROOT / "app.py"), "--headless", "--port", str(port)],
        cwd=app_root(data_dir), env=full_env, stdout=log_file, stderr=subprocess.STDOUT,
    )
    log_file.close()
    app = App(f"http://127.0.0.1:{port}", port, data_dir, env, proc, log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited with {proc.returncode}:\n{app.log()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{app.url}/healthz", timeout=2).status_code in (200, 503):
                return app
        time.sleep(0.2)
    app.stop()
    raise RuntimeError(f"the app did not answer within {timeout} s:\n{app.log()[-3000:]}")


@contextlib.asynccontextmanager
async def background(*loops: Awaitable[None]) -> AsyncIterator[None]:
    """Run traffic loops (coroutines that never return) while the body runs; cancel them after."""
    tasks = [asyncio.ensure_future(loop) for loop in loops]
    try:
        yield
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def wait_until(predicate: Callable[[], Any], timeout: float, what: str, *,
                     interval: float = 0.05, detail: Callable[[], Any] | None = None) -> Any:
    """Poll `predicate` (plain or async) until it returns something truthy, and return that. When
    `timeout` runs out, raise AssertionError naming `what` (and `detail()`, the state to look at)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = ""
            if detail is not None:
                shown = detail()
                extra = f"; last seen: {(await shown) if inspect.isawaitable(shown) else shown!r}"
            raise AssertionError(f"timed out after {timeout} s waiting for {what}{extra}")
        await asyncio.sleep(interval)


def wait_until_sync(predicate: Callable[[], Any], timeout: float, what: str, *, interval: float = 0.05) -> Any:
    """wait_until for plain (non-async) code."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
    return value


async def login(base_url: str, username: str, password: str) -> str:
    """POST /login; the access token (also set as a cookie). Raises on a refused login."""
    async with httpx.AsyncClient(base_url=base_url) as http:
        r = await http.post("/login", data={"username": username, "password": password})
        r.raise_for_status()
        return r.cookies.get("access_token") or r.json()["access_token"]


async def login_status(base_url: str, username: str, password: str) -> int:
    async with httpx.AsyncClient(base_url=base_url) as http:
        return (await http.post("/login", data={"username": username, "password": password})).status_code


@dataclass
class Msg:
    """One message (step) as the client sees it: last known content, plus the streamed tokens."""
    id: str
    type: str = ""
    output: str = ""
    tokens: list[str] = field(default_factory=list)
    token_at: list[float] = field(default_factory=list)  # time.monotonic() when each token arrived
    streamed: bool = False
    final: bool = False  # new_message/update_message seen after streaming, or sent whole
    removed: bool = False
    parent_id: str | None = None
    name: str = ""
    raw: dict = field(default_factory=dict)

    @property
    def translation(self) -> str:
        return translation_of(self.output)

    @property
    def attribution(self) -> tuple[str, str] | None:
        m = ATTRIBUTION_RE.search(self.output)
        return (m.group(1), m.group(2)) if m else None


class ChatClient:
    """One browser tab's worth of Chainlit session, without the browser."""

    def __init__(self, base_url: str, token: str, username: str) -> None:
        self.base_url = base_url
        self.token = token
        self.username = username
        self.session_id = str(uuid.uuid4())
        self.thread_id: str | None = None
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.messages: dict[str, Msg] = {}
        self.order: list[str] = []
        self.commands: list[dict] | None = None
        self.settings_widgets: list[dict] | None = None
        self.modes: list[dict] = []  # the composer's pickers (From, To), as the server set them
        self.picked: dict[str, str] = {}  # what this "browser" picked in them, over their defaults
        self.elements: list[dict] = []  # files and other elements sent to this client
        self.actions: list[dict] = []
        self.sent: list[str] = []  # ids of the user messages this client sent
        self.busy = False  # between the server's task_start and task_end
        self._changed = asyncio.Condition()
        for name in ("new_message", "update_message", "delete_message", "stream_start", "stream_token",
                     "task_start", "task_end", "set_commands", "chat_settings", "action", "remove_action",
                     "first_interaction", "resume_thread", "resume_thread_error", "toast", "set_modes", "element"):
            self.sio.on(name, self._handler(name))

    def _handler(self, name: str) -> Callable[[Any], Any]:
        async def handle(data: Any = None) -> None:
            self._apply(name, data)
            async with self._changed:
                self.events.append((name, data))
                self._changed.notify_all()
        return handle

    def _msg(self, step: dict) -> Msg:
        mid = step["id"]
        if mid not in self.messages:
            self.messages[mid] = Msg(mid)
            self.order.append(mid)
        m = self.messages[mid]
        m.type = step.get("type", m.type)
        m.parent_id = step.get("parentId", m.parent_id)
        m.name = step.get("name", m.name)
        m.raw = step
        return m

    def _apply(self, name: str, data: Any) -> None:
        if name in ("new_message", "update_message"):
            m = self._msg(data)
            m.output = data.get("output", "")
            m.final = True
        elif name == "stream_start":
            m = self._msg(data)
            m.output = data.get("output", "")
            m.tokens.append(m.output)
            m.token_at.append(time.monotonic())
            m.streamed = True
        elif name == "stream_token":
            m = self.messages.get(data["id"])
            if m is not None:
                if data.get("isSequence"):
                    m.output = data["token"]
                else:
                    m.output += data["token"]
                m.tokens.append(data["token"])
                m.token_at.append(time.monotonic())
        elif name == "delete_message":
            if (m := self.messages.get(data["id"])) is not None:
                m.removed = True
        elif name in ("task_start", "task_end"):
            self.busy = name == "task_start"
        elif name == "set_commands":
            self.commands = data
        elif name == "chat_settings":
            self.settings_widgets = data
        elif name == "set_modes":
            self.modes = data
        elif name == "element":
            self.elements.append(data)
        elif name == "action":
            self.actions.append(data)
        elif name == "remove_action":
            self.actions = [a for a in self.actions if a.get("id") != data.get("id")]
        elif name == "first_interaction":
            self.thread_id = data.get("thread_id") or self.thread_id

    # connection ---------------------------------------------------------------
    async def connect(self, thread_id: str | None = None, transports: tuple[str, ...] = ("websocket",)) -> None:
        """Open the chat session. The browser's client starts with ("polling", "websocket"):
        long-polling, then the upgrade; a test that does not look at transports skips the polls."""
        self.thread_id = thread_id
        await self.sio.connect(
            self.base_url,
            socketio_path="/ws/socket.io",
            transports=list(transports),
            headers={"Cookie": f"access_token={self.token}"},
            auth={"sessionId": self.session_id, "clientType": "webapp", "userEnv": "{}",
                  "chatProfile": "", "threadId": thread_id or ""},
            wait_timeout=10,
        )
        await self.sio.emit("connection_successful")
        # on_chat_start / on_chat_resume send the command list, then end their task: wait for
        # both, so that task_end is not mistaken later for the end of a message's task.
        await self.wait_for(self._session_ready, timeout=15, what="the chat session to start")

    def _session_ready(self) -> bool:
        names = [n for n, _ in self.events]
        if "set_commands" not in names:
            return False
        return "task_end" in names[len(names) - 1 - names[::-1].index("set_commands"):]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.emit("clear_session")
        await self.sio.disconnect()

    # waiting ------------------------------------------------------------------
    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 30, what: str = "a condition") -> Any:
        async def until() -> Any:
            async with self._changed:
                while not (value := predicate()):
                    await self._changed.wait()
                return value
        try:
            return await asyncio.wait_for(until(), timeout)
        except asyncio.TimeoutError:
            tail = [(n, d if n != "stream_token" else d.get("token")) for n, d in self.events[-12:]]
            raise AssertionError(f"{self.username}: timed out after {timeout} s waiting for {what}; last events: {tail}") from None

    def count(self, event: str) -> int:
        return sum(1 for n, _ in self.events if n == event)

    # talking ------------------------------------------------------------------
    def chosen_modes(self) -> dict[str, str]:
        """What the composer sends: each picker's picked option, else its default."""
        defaults = {m["id"]: next((o["id"] for o in m["options"] if o.get("default")), m["options"][0]["id"])
                    for m in self.modes if m["options"]}
        return {**defaults, **self.picked}

    def pick(self, **modes: str) -> None:
        """Pick languages in the composer's From/To pickers (source=..., target=...)."""
        self.picked.update(modes)

    async def upload(self, name: str, data: bytes, mime: str, timeout: float = 5) -> str:
        """Upload a file the way the composer does before sending; its id for `send(files=...)`."""
        async with httpx.AsyncClient(base_url=self.base_url, cookies={"access_token": self.token},
                                     timeout=timeout) as http:
            r = await http.post("/project/file", params={"session_id": self.session_id},
                                files={"file": (name, data, mime)})
        assert r.status_code == 200, r.text
        return r.json()["id"]

    async def download(self, element: dict) -> bytes:
        """A file element's content, fetched the way the browser's download link does."""
        async with httpx.AsyncClient(base_url=self.base_url, cookies={"access_token": self.token}) as http:
            r = await http.get(f"/project/file/{element['chainlitKey']}", params={"session_id": self.session_id})
        assert r.status_code == 200, r.text
        return r.content

    async def send(self, text: str, command: str | None = None, files: list[str] | None = None) -> str:
        """Send a user message like the composer does (with its pickers' values); its id."""
        mid = str(uuid.uuid4())
        step: dict[str, Any] = {
            "threadId": self.thread_id or "", "id": mid, "name": self.username, "type": "user_message",
            "output": text, "createdAt": datetime.now(timezone.utc).isoformat(), "metadata": {},
        }
        if command:
            step["command"] = command
        if modes := self.chosen_modes():
            step["modes"] = modes
        self.sent.append(mid)
        refs = [{"id": f} for f in files] if files else None
        await self.sio.emit("client_message", {"message": step, "fileReferences": refs})
        return mid

    async def ask(self, text: str, command: str | None = None, timeout: float = 60,
                  files: list[str] | None = None) -> list[Msg]:
        """Send, wait until the server's task for it ends, and return the assistant messages
        that appeared after it (still present)."""
        # Let any running task (a settings change, a previous message) end first, so its
        # task_end is not taken for this message's.
        await self.wait_for(lambda: not self.busy, timeout, "the previous task to end")
        before_end = self.count("task_end")
        before = len(self.order)
        await self.send(text, command, files)
        await self.wait_for(lambda: self.count("task_end") > before_end, timeout, f"the answer to {text!r}")
        return [self.messages[i] for i in self.order[before:]
                if self.messages[i].type == "assistant_message" and not self.messages[i].removed]

    async def reply(self, text: str, command: str | None = None, timeout: float = 60) -> str:
        """The text of the last assistant message answering `text`."""
        msgs = await self.ask(text, command, timeout)
        assert msgs, f"no answer to {text!r}"
        return msgs[-1].output

    async def stop(self) -> None:
        await self.sio.emit("stop")

    async def change_settings(self, **values: str) -> None:
        """Submit the chat settings, and return once the server has handled them: Chainlit runs
        on_settings_update as a task (task_start ... task_end), which must not be taken later
        for the end of a message's task."""
        await self.wait_for(lambda: not self.busy, 30, "the previous task to end")
        before_end = self.count("task_end")
        await self.sio.emit("chat_settings_change", values)
        await self.wait_for(lambda: self.count("task_end") > before_end, 30, f"the settings change {values} to be handled")

    def find(self, pattern: str, *, after: int = 0, type: str | None = "assistant_message") -> Msg | None:
        """The first message (of `type`; None for any step) after position `after` matching `pattern`."""
        rx = re.compile(pattern, re.S)
        for mid in self.order[after:]:
            m = self.messages[mid]
            if not m.removed and (type is None or m.type == type) and rx.search(m.output):
                return m
        return None

    async def wait_message(self, pattern: str, timeout: float = 30, after: int = 0,
                           type: str | None = "assistant_message") -> Msg:
        return await self.wait_for(lambda: self.find(pattern, after=after, type=type), timeout,
                                   f"a message matching {pattern!r}")

    async def click(self, action: dict, timeout: float = 30) -> httpx.Response:
        """Click a button (cl.Action): Chainlit posts it over HTTP with the session id."""
        async with httpx.AsyncClient(base_url=self.base_url, cookies={"access_token": self.token}, timeout=timeout) as http:
            return await http.post("/project/action", json={"sessionId": self.session_id, "action": action})


async def connect(app_url: str, username: str, password: str, thread_id: str | None = None) -> ChatClient:
    token = await login(app_url, username, password)
    client = ChatClient(app_url, token, username)
    await client.connect(thread_id)
    return client


@contextlib.asynccontextmanager
async def chatting(app_url: str, username: str, password: str) -> AsyncIterator[ChatClient]:
    """connect() for the body of an `async with`, closed after it."""
    client = await connect(app_url, username, password)
    try:
        yield client
    finally:
        await client.close()


async def serve_one(chat: ChatClient, name: str, users: Sequence[tuple[str, str]] = ()) -> None:
    """As an admin in the chat: load model `name` as version `name` with the template "{text}",
    switch to it once it is ready, and add `users` (name, password) as users."""
    assert "Loading" in await chat.reply(f'/load {name} {name} --template "{{text}}"')
    await chat.wait_message(rf"`{name}` is ready", timeout=60)
    assert "Switched" in await chat.reply(f"/switch {name}")
    for user, password in users:
        assert "Added" in await chat.reply(f"/users add {user} {password} user")


def admin_http(app: App, key: str) -> httpx.AsyncClient:
    """The admin API (/admin/v1) with `key`."""
    return httpx.AsyncClient(base_url=f"{app.url}/admin/v1", headers={"Authorization": f"Bearer {key}"}, timeout=30)


async def load_versions(app: App, admin_key: str, names: Sequence[str], switches: Sequence[str]) -> None:
    """Through the admin API: register and load each of `names` (model directories of the same
    names), wait until all are ready, then switch to each of `switches` in turn."""
    async with admin_http(app, admin_key) as http:
        for name in names:
            r = await http.post("/versions", json={"name": name, "model_path": name})
            assert r.status_code == 202, r.text
        for name in names:
            await wait_until(lambda n=name: _ready(http, n), 30, f"{name} ready")
        for name in switches:
            assert (await http.post("/deployment/switch", json={"name": name})).status_code == 200


async def _ready(http: httpx.AsyncClient, name: str) -> bool:
    return (await http.get(f"/versions/{name}")).json()["state"] == "ready"


async def make_key(chat: ChatClient, name: str, role: str) -> str:
    """An API key made by an admin in the chat (`/keys add NAME ROLE`): its secret, shown once."""
    reply = await chat.reply(f"/keys add {name} {role}")
    found = KEY_RE.search(reply)
    assert found, reply
    return found.group(0)


async def threads(app_url: str, token: str) -> list[dict]:
    """The user's threads, as the sidebar lists them."""
    async with httpx.AsyncClient(base_url=app_url, cookies={"access_token": token}) as http:
        r = await http.post("/project/threads", json={"pagination": {"first": 50}, "filter": {}})
        r.raise_for_status()
        return r.json()["data"]


async def healthz(app_url: str) -> tuple[int, dict]:
    async with httpx.AsyncClient(base_url=app_url) as http:
        r = await http.get("/healthz")
        return r.status_code, r.json()


async def metric(app_url: str, name: str, **labels: str) -> float:
    """A sample's value in the app's /metrics (0 when it is not there yet)."""
    async with httpx.AsyncClient(base_url=app_url) as http:
        text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


async def wait_until_healthy(app_url: str, timeout: float) -> dict:
    """Wait until /healthz says the active version serves; fail loudly at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = await healthz(app_url)
        if code == 200 and body["status"] == "ok":
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/healthz not ok within {timeout} s: {body}")
        await asyncio.sleep(0.1)
