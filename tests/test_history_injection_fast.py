"""Attack: SQL injection through a chosen thread id (issue 20, item 1), on SQLite and Postgres.

Chainlit 2.12 keeps the `threadId` a client sends in its socket.io `auth` as the session's thread
id, stores it with the first message, and its data layer pasted a user's thread ids into an
`IN (...)` clause. A plain user who connected with `zz') UNION ALL SELECT ... FROM accounts ...`,
sent one message and listed her threads got every account's password hash back as steps of her
own thread. Two layers stop it: the id is refused at connect (nothing is stored), and the data
layer binds its ids (a hostile id already in the database reads as itself, nothing more).
"""
from __future__ import annotations

import json
import sqlite3
import uuid
from datetime import UTC, datetime

import httpx
import pytest
import socketio
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.user import User
from sqlalchemy import text

from admin.chat_history import HistoryDataLayer
from engine.store import Store
from tests import chatkit as ck

ADMIN = ("root", "root-password-1")
MALLORY = ("mallory", "mallory-password-1")
BOB = ("bob", "bob-password-123")
# What the attack reads: every account's name and password hash, as the output of "steps".
UNION = ("zz') UNION ALL SELECT a.username, a.username, 'x', s.\"threadId\", NULL, 0, 0, 0, '{}', NULL, "
         "a.password_hash, a.password_hash, '2000', NULL, NULL, '{}', 'true', NULL, NULL, NULL, NULL "
         "FROM accounts a, steps s WHERE 'a' IN ('a")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def app(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(f"baton-inject-{request.param}")
    ck.make_fake_model(d, "v1")
    env = ck.fake_env(d)
    if request.param == "postgres":
        env = {**env, "BATON_DATABASE_URL": request.getfixturevalue("postgres").new_database(),
               "BATON_PORT_MIN": "31050", "BATON_PORT_MAX": "31099"}
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def people(app):
    async with ck.chatting(app.url, *ADMIN) as admin:
        for who in (MALLORY, BOB):
            assert f"Added `{who[0]}`" in await admin.reply(f"/users add {who[0]} {who[1]} user")
        await admin.reply("/load v1 v1")
        await admin.wait_message(r"`v1` is ready")
        await admin.reply("/switch v1")
    async with ck.chatting(app.url, *BOB) as bob:
        await bob.ask("bob's private words")
    return True


async def _listed(app: ck.App, token: str) -> str:
    """Everything the thread list and each listed thread give this user, as one text."""
    threads = await ck.threads(app.url, token)
    async with httpx.AsyncClient(base_url=app.url, cookies={"access_token": token}) as http:
        whole = [(await http.get(f"/project/thread/{t['id']}")).json() for t in threads]
    return json.dumps([threads, whole])


async def test_a_thread_id_that_is_not_a_uuid_is_refused_at_connect_and_nothing_is_stored(app, people):
    token = await ck.login(app.url, *MALLORY)
    attacker = ck.ChatClient(app.url, token, MALLORY[0])
    refusals: list[dict] = []
    attacker.sio.on("connect_error", refusals.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await attacker.connect(UNION)
    assert refusals and "its id is not a valid thread id. Start a new chat." in refusals[0]["message"], refusals
    listed = await _listed(app, token)
    assert "argon2" not in listed and "bob's private words" not in listed
    assert UNION not in listed

    # The legitimate use still works: her own new chat, listed and resumed by its (UUID) id.
    async with ck.chatting(app.url, *MALLORY) as mallory:
        await mallory.ask("mallory's own words")
        own = await mallory.wait_for(lambda: mallory.thread_id, 5, "her thread's id")
    assert [t["id"] for t in await ck.threads(app.url, token)] == [own]
    again = ck.ChatClient(app.url, token, MALLORY[0])
    await again.connect(own)
    try:
        resumed = await again.wait_for(lambda: next((d for n, d in again.events if n == "resume_thread"), None),
                                       10, "the resumed thread")
        assert "mallory's own words" in [s["output"] for s in resumed["steps"]]
    finally:
        await again.close()


async def test_a_hostile_thread_id_already_stored_reads_as_itself_and_nothing_more(app, people):
    """The second layer: a thread whose id is the attack, as if stored before the connect check
    (SQLite only: Postgres keeps thread ids in a UUID column, which refuses it)."""
    if "BATON_DATABASE_URL" in app.env:
        pytest.skip("Postgres stores thread ids as UUIDs: a hostile id cannot be stored")
    db = app.data_dir / "baton.db"
    with sqlite3.connect(db) as conn:
        (user_id,) = conn.execute('SELECT id FROM users WHERE identifier = ?', (MALLORY[0],)).fetchone()
        conn.execute('INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", metadata) '
                     'VALUES (?, ?, ?, ?, ?, ?)', (UNION, "2026-01-01", "hostile", user_id, MALLORY[0], "{}"))
        conn.execute('INSERT INTO steps (id, name, type, "threadId", streaming, output, "createdAt") '
                     "VALUES (?, ?, ?, ?, 0, ?, ?)",
                     (str(uuid.uuid4()), MALLORY[0], "user_message", UNION, "hello", "2026-01-01"))
    token = await ck.login(app.url, *MALLORY)
    listed = await _listed(app, token)
    assert "argon2" not in listed, "password hashes leaked through the thread list"
    assert "bob's private words" not in listed, "another user's chat leaked"
    hostile = next(t for t in await ck.threads(app.url, token) if t["id"] == UNION)
    assert [s["output"] for s in hostile["steps"]] == ["hello"]


async def test_the_data_layer_round_trips_a_thread_with_bound_ids(database_url, tmp_path):
    """The layer's own thread query, against Chainlit's, on both databases: the same thread, steps
    (with their feedback) and elements come back."""
    store = Store(database_url)
    await store.migrate()
    ours, theirs = HistoryDataLayer(conninfo=database_url), SQLAlchemyDataLayer(conninfo=database_url)
    try:
        user = await ours.create_user(User(identifier="ann", metadata={"role": "user"}))
        assert user is not None
        thread = str(uuid.uuid4())
        await ours.update_thread(thread, name="greetings", user_id=user.id, metadata={"lang": "fr"})
        step = {"id": str(uuid.uuid4()), "threadId": thread, "name": "ann", "type": "user_message",
                "streaming": False, "output": "Good morning", "input": "in", "showInput": "true",
                "createdAt": datetime.now(UTC).isoformat(), "metadata": {}, "modes": json.dumps({"from": "en"})}
        # Unwrapped: outside a chat session, there is no first message to queue the write behind.
        await SQLAlchemyDataLayer.create_step.__wrapped__(ours, step)  # type: ignore[attr-defined]
        async with store.engine.begin() as conn:
            await conn.execute(text('INSERT INTO feedbacks (id, "forId", "threadId", value) VALUES '
                                    '(:id, :step, :thread, 1)'), {"id": str(uuid.uuid4()), "step": step["id"],
                                                                  "thread": thread})
        mine = await ours.get_all_user_threads(user_id=user.id)
        upstream = await theirs.get_all_user_threads(user_id=user.id)
        assert mine is not None and upstream is not None
        assert [t["id"] for t in mine] == [t["id"] for t in upstream] == [thread]
        for key in ("name", "userId", "userIdentifier"):
            assert mine[0][key] == upstream[0][key]  # type: ignore[literal-required]
        got, want = mine[0]["steps"][0], upstream[0]["steps"][0]
        assert (got["output"], got["input"], got["feedback"]) == (want["output"], want["input"], want["feedback"])
        assert got["feedback"] is not None and got["feedback"]["value"] == 1
        assert await ours.get_thread(str(uuid.uuid4())) is None
    finally:
        await ours.engine.dispose()
        await theirs.engine.dispose()
        await store.close()


async def test_chainlits_own_layer_leaks_the_hashes_and_ours_does_not(tmp_path):
    """The attack at the data layer, on SQLite (where thread ids are text): Chainlit's layer pastes
    the stored id into its query and returns every account's hash as a step of the attacker's
    thread; this one returns the thread's own step."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}"
    store = Store(url)
    await store.migrate()
    await store.close()
    with sqlite3.connect(tmp_path / "baton.db") as conn:
        conn.execute("INSERT INTO accounts (username, password_hash, role, created_by, created_at) "
                     "VALUES ('root', '$argon2id$v=19$secret', 'admin', '', '2026-01-01')")
        user_id = str(uuid.uuid4())
        conn.execute("INSERT INTO users (id, identifier, metadata) VALUES (?, 'mallory', '{}')", (user_id,))
        conn.execute('INSERT INTO threads (id, "createdAt", name, "userId", "userIdentifier", metadata) '
                     "VALUES (?, '2026', 'hostile', ?, 'mallory', '{}')", (UNION, user_id))
        conn.execute('INSERT INTO steps (id, name, type, "threadId", streaming, output, "createdAt") '
                     "VALUES (?, 'mallory', 'user_message', ?, 0, 'hello', '2026')", (str(uuid.uuid4()), UNION))
    ours, theirs = HistoryDataLayer(conninfo=url), SQLAlchemyDataLayer(conninfo=url)
    try:
        leaked = json.dumps(await theirs.get_all_user_threads(user_id=user_id))
        assert "$argon2id$v=19$secret" in leaked, "the attack no longer works on Chainlit's layer: drop this test"
        mine = await ours.get_all_user_threads(user_id=user_id)
        assert mine is not None and [[s["output"] for s in t["steps"]] for t in mine] == [["hello"]]
        assert "argon2" not in json.dumps(mine)
    finally:
        await ours.engine.dispose()
        await theirs.engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}"
    return request.getfixturevalue("postgres").new_database()
