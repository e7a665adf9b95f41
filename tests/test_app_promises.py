"""Promises the README makes about the running app, checked on the real Chainlit app in a
subprocess (tests/chatkit.py) with fake vLLM backends (tests/fake_vllm.py).

- GET /healthz answers 503, with a body that says why, whenever nothing can serve;
- the chat explains empty and oversized input instead of failing;
- accounts are stored as argon2 hashes; `make demo`'s login file is private (0600);
- a canary splits traffic by conversation, survives an app restart (name and percent), and
  `/canary abort` returns every conversation to the active version;
- SIGKILL of the app leaves no backend process alive.

The tests share one app (restarted in the middle, killed at the end) and run in file order.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from admin.accounts import Accounts
from engine.backend import MARKER_ENV
from engine.router import canary_bucket
from engine.store import Store
from engine.translate import MAX_TEXT_CHARS
from tests import chatkit as ck

ADMIN = ("root", "root-password-1")
ALICE = ("alice", "alice-password-1")
CANARY_PERCENT = 50


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("baton-promises")
    # v1 takes 1.5 s to start, at every start: after a crash, /healthz can be seen saying 503.
    ck.make_fake_model(d, "v1", startup_s=1.5, token_delay_s=0.02)
    ck.make_fake_model(d, "v2", token_delay_s=0.02)
    return d


@pytest.fixture(scope="module")
def env(data_dir) -> dict[str, str]:
    # Own port range: the other suites may run fake backends at the same time.
    return {**ck.fake_env(data_dir), "BATON_REQUEST_WAIT_S": "5", "BATON_RESTART_BACKOFF_S": "1",
            "BATON_PORT_MIN": "22000", "BATON_PORT_MAX": "22999"}


@dataclass
class Running:
    """The app under test (replaced when a test restarts it) and what tests hand on to later ones."""
    app: ck.App
    conversations: dict[str, tuple[str, str]] = field(default_factory=dict)  # side -> (token, thread id)


@pytest.fixture(scope="module")
def running(env):
    r = Running(ck.launch_app(env, admin=ADMIN))
    yield r
    r.app.stop()


@contextlib.asynccontextmanager
async def chat(app: ck.App, user: tuple[str, str]):
    client = await ck.connect(app.url, *user)
    try:
        yield client
    finally:
        await client.close()


def status_pid(status: str, version: str) -> int:
    row = next(line for line in status.splitlines() if line.startswith(f"| {version} |"))
    return int(row.split("|")[5])


async def health_when(app: ck.App, code: int, what: str, timeout: float = 15) -> dict:
    """/healthz's body once it answers `code`; fails naming `what` if it does not in time."""
    async def probe() -> dict | None:
        got, body = await ck.healthz(app.url)
        return body if got == code else None
    return await ck.wait_until(probe, timeout, what, detail=lambda: ck.healthz(app.url))


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (already dead, waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def backend_processes(data_dir: Path) -> set[int]:
    """Every process started for a backend of the app using `data_dir`: the guards and the servers
    carry the engine's marker variable in their environment (which holds nothing else of the app's),
    and their command lines name a model under `data_dir`."""
    want_marker, want_dir = f"{MARKER_ENV}=".encode(), str(data_dir).encode()
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                env = (entry / "environ").read_bytes().split(b"\0")
                named = any(want_dir in arg for arg in (entry / "cmdline").read_bytes().split(b"\0"))
                if named and any(v.startswith(want_marker) for v in env) and alive(int(entry.name)):
                    found.add(int(entry.name))
    return found


# ------------------------------------------------------------------------------------
async def test_healthz_is_503_and_says_why_whenever_nothing_can_serve(running):
    app = running.app
    code, body = await ck.healthz(app.url)
    assert code == 503, body
    assert body["status"] == "unavailable" and body["active"] is None and body["versions"] == {}, \
        "a fresh install: no version at all"

    async with chat(app, ADMIN) as admin:
        mark = len(admin.order)
        assert "Loading `v1`" in await admin.reply("/load v1 v1")
        await admin.wait_message(r"`v1` is ready", timeout=20, after=mark)
        code, body = await ck.healthz(app.url)
        assert code == 503, body
        assert body["status"] == "unavailable" and body["active"] is None and body["versions"] == {"v1": "ready"}, \
            "a ready version nobody switched to serves nothing"

        assert "Switched: `v1` now answers" in await admin.reply("/switch v1")
        code, body = await ck.healthz(app.url)
        assert (code, body["status"], body["active"], body["active_state"]) == (200, "ok", "v1", "ready"), body

        # The only version crashes: 503 until the supervisor has it ready again, naming it and its state.
        os.kill(status_pid(await admin.reply("/status"), "v1"), signal.SIGKILL)
        down = await health_when(app, 503, "/healthz to answer 503 after the only version crashed")
        assert down["status"] == "unavailable" and down["active"] == "v1", down
        assert down["active_state"] != "ready" and down["versions"] == {"v1": down["active_state"]}, down
        back = await health_when(app, 200, "/healthz to answer 200 once v1 was restarted", timeout=30)
        assert back["status"] == "ok" and back["active_state"] == "ready", back


async def test_empty_and_oversized_text_get_a_clear_message(running):
    async with chat(running.app, ADMIN) as admin:
        assert f"Added `{ALICE[0]}` as user" in await admin.reply(f"/users add {ALICE[0]} {ALICE[1]} user")
    async with chat(running.app, ALICE) as alice:
        for blank in ("", "   \n\t "):
            reply = await alice.reply(blank)
            assert "There is no text to translate. Type the text you want translated." in reply, repr(reply)
            assert "_Translated by" not in reply and "Something went wrong" not in reply, reply

        too_long = "x" * (MAX_TEXT_CHARS + 1)
        reply = await alice.reply(too_long)
        assert f"The text is {MAX_TEXT_CHARS + 1} characters long; the limit is {MAX_TEXT_CHARS}. Split it into shorter parts." \
            in reply, reply[:300]
        assert "_Translated by" not in reply

        tail = " at the limit"
        at_limit = "y" * (MAX_TEXT_CHARS - len(tail)) + tail  # exactly MAX_TEXT_CHARS characters: translated
        answer = (await alice.ask(at_limit))[-1]
        assert answer.attribution == ("v1", "active"), answer.output[:300]
        assert answer.output.startswith("v1 says:") and "at the limit" in answer.output


async def test_passwords_are_stored_as_argon2_hashes(running):
    with contextlib.closing(sqlite3.connect(running.app.data_dir / "baton.db")) as db:
        rows = dict(db.execute("SELECT username, password_hash FROM accounts"))
    assert set(rows) == {ADMIN[0], ALICE[0]}, rows.keys()
    for (name, password) in (ADMIN, ALICE):
        assert rows[name].startswith("$argon2id$"), rows[name][:20]
        assert password not in rows[name]


async def test_demo_logins_are_argon2_accounts_in_a_0600_file(tmp_path, monkeypatch):
    """`make demo` (demo.prepare.ensure_logins) creates an admin and a guest with random
    passwords and writes them to a file only its owner can read, whatever the umask."""
    from demo.prepare import DEMO_LOGINS, ensure_logins

    monkeypatch.delenv("BATON_ADMIN_USER", raising=False)  # the operator chose no accounts
    store = Store(f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}")
    await store.migrate()  # every table, the accounts' too
    db = store.engine
    accounts = Accounts(db)
    logins = tmp_path / "demo-logins.txt"
    old_umask = os.umask(0)  # the most permissive umask: the mode must not come from it
    try:
        await ensure_logins(accounts, logins)
    finally:
        os.umask(old_umask)
    try:
        assert logins.stat().st_mode & 0o777 == 0o600
        lines = logins.read_text().split("\n")
        listed = {}
        for line in filter(None, lines):
            role, _, name, _, password = line.split()
            listed[name] = (role, password)
        assert {name: role for name, (role, _) in listed.items()} == dict(DEMO_LOGINS)
        for name, (role, password) in listed.items():
            account = await accounts.verify(name, password)
            assert account is not None and account.role == role
            assert await accounts.verify(name, password + "x") is None
        async with db.connect() as conn:
            hashes = [h for (h,) in (await conn.exec_driver_sql("SELECT password_hash FROM accounts")).all()]
        assert len(hashes) == 2 and all(h.startswith("$argon2id$") for h in hashes)

        before = logins.read_text()
        await ensure_logins(accounts, logins)  # a second `make demo` keeps them
        assert logins.read_text() == before and await accounts.count_admins() == 1
    finally:
        await store.close()


async def answer_side(client: ck.ChatClient, text: str) -> tuple[str, tuple[str, str] | None]:
    """Ask, and return which side of the canary split the conversation is on, with the answer's attribution."""
    answer = (await client.ask(text))[-1]
    thread = await client.wait_for(lambda: client.thread_id, 5, "the conversation's id")
    side = "canary" if canary_bucket(thread) < CANARY_PERCENT else "active"
    return side, answer.attribution


async def test_a_canary_splits_traffic_by_conversation(running):
    app = running.app
    async with chat(app, ADMIN) as admin:
        mark = len(admin.order)
        assert "Loading `v2`" in await admin.reply("/load v2 v2")
        await admin.wait_message(r"`v2` is ready", timeout=20, after=mark)
        reply = await admin.reply(f"/canary v2 {CANARY_PERCENT}")
        assert f"Canary on: `v2` answers {CANARY_PERCENT}% of conversations, `v1` the rest." in reply, reply

    token = await ck.login(app.url, *ALICE)
    for i in range(40):  # new conversations until one is on each side (each lands on one with p = 1/2)
        client = ck.ChatClient(app.url, token, ALICE[0])
        await client.connect()
        try:
            side, attribution = await answer_side(client, f"conversation {i}")
            expected = ("v2", "canary") if side == "canary" else ("v1", "active")
            assert attribution == expected, f"conversation {client.thread_id} ({side} side) answered by {attribution}"
            # The same conversation stays on its side.
            assert (await answer_side(client, "again"))[1] == expected
            running.conversations.setdefault(side, (token, client.thread_id))
        finally:
            await client.close()
        if len(running.conversations) == 2:
            break
    assert set(running.conversations) == {"canary", "active"}


async def test_the_canary_is_restored_after_a_restart(running, env):
    assert running.app.stop() == 0
    running.app = app = ck.launch_app(env, admin=ADMIN)
    # Both the active version and the canary are started again.
    health = await health_when(app, 200, "the app to serve again after its restart", timeout=30)
    assert (health["active"], health["canary"], health["canary_percent"]) == ("v1", "v2", CANARY_PERCENT), health
    await ck.wait_until(
        lambda: _body_if(app, lambda b: b["versions"] == {"v1": "ready", "v2": "ready"}), 30,
        "v1 and v2 both ready again", detail=lambda: ck.healthz(app.url))
    async with chat(app, ADMIN) as admin:
        assert f"**canary:** `v2` ({CANARY_PERCENT}% of conversations)" in await admin.reply("/status")

    # Each conversation, resumed, is still on its side of the split.
    for side, (token, thread_id) in running.conversations.items():
        client = ck.ChatClient(app.url, token, ALICE[0])
        await client.connect(thread_id)
        try:
            answer = (await client.ask("after the restart"))[-1]
            assert answer.attribution == (("v2", "canary") if side == "canary" else ("v1", "active")), (side, answer.output)
        finally:
            await client.close()


async def _body_if(app: ck.App, check) -> dict | None:
    _, body = await ck.healthz(app.url)
    return body if check(body) else None


async def test_canary_abort_returns_all_traffic_to_the_active_version(running):
    app = running.app
    async with chat(app, ADMIN) as admin:
        assert "Canary stopped: `v1` answers every request again." in await admin.reply("/canary abort")
        health = (await ck.healthz(app.url))[1]
        assert (health["canary"], health["canary_percent"], health["active"]) == (None, 0, "v1"), health
        assert "There is no canary to abort." in await admin.reply("/canary abort")
        assert "**canary:**" not in await admin.reply("/status")

    token, thread_id = running.conversations["canary"]
    client = ck.ChatClient(app.url, token, ALICE[0])
    await client.connect(thread_id)
    try:
        for text in ("after the abort", "and once more"):
            answer = (await client.ask(text))[-1]
            assert answer.attribution == ("v1", "active"), answer.output
    finally:
        await client.close()


async def test_sigkill_of_the_app_leaves_no_backend_alive(running):
    app = running.app
    async with chat(app, ADMIN) as admin:
        status = await admin.reply("/status")
    procs = backend_processes(app.data_dir)
    servers = {status_pid(status, "v1"), status_pid(status, "v2")}
    assert servers <= procs and len(procs) >= 4, (servers, procs)  # a guard and a server per version

    app.proc.send_signal(signal.SIGKILL)
    app.proc.wait(10)
    gone = await ck.wait_until(lambda: not any(alive(p) for p in procs), 10,
                               "every backend process to end after SIGKILL of the app",
                               detail=lambda: sorted(p for p in procs if alive(p)))
    assert gone and backend_processes(app.data_dir) == set()
