"""The database layer on SQLite and on a real Postgres server: the Alembic migrations (the schema
they make is the models', a database from before Alembic upgrades in place and keeps its rows),
the chat history through Chainlit's data layer on Postgres, the deployment's generation as a
compare-and-swap with its NOTIFY, and the replicas' heartbeat records."""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.user import User
from sqlalchemy import MetaData, inspect, text

from admin.accounts import Accounts
from admin.glossary import Glossary
from admin.keys import Keys
from admin.named_glossaries import NamedGlossaries
from admin.usage import Usage
from admin.votes import Votes
from engine import Conflict, Engine, InvalidArgument, migrations
from engine.migrations import CHAT_TABLES
from engine.store import NOTIFY_CHANNEL, Base, Change, Store, _write_change
from engine.types import Deployment

from .conftest import fake_model, fake_settings


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'baton.db'}"
    return request.getfixturevalue("postgres").new_database()


@pytest.fixture
async def store(database_url):
    s = Store(database_url)
    await s.migrate()
    yield s
    await s.close()


def raw_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://")


def change(dep: Deployment, actor: str = "ops", **fields) -> Change:
    return Change(replace(dep, **fields), {}, actor, "switch", {"name": fields.get("active")}, "")


# ---------------------------------------------------------------------------- migrations


def models() -> MetaData:
    """The engine's tables and every admin store's, in one metadata."""
    combined = MetaData()
    for base in (Base, Accounts.base, Keys.base, Votes.base, Glossary.base, Usage.base, NamedGlossaries.base):
        for table in base.metadata.tables.values():
            table.to_metadata(combined)
    return combined


async def test_the_migrated_schema_is_the_models(store):
    """A fresh database migrated to head has exactly the models' tables, columns, types and indexes."""
    def differences(conn):
        ctx = MigrationContext.configure(conn, opts={
            "compare_type": True,
            "include_object": lambda obj, name, kind, reflected, other: not (
                kind == "table" and name in CHAT_TABLES | {"alembic_version"}),
        })
        return compare_metadata(ctx, models())

    async with store.engine.connect() as conn:
        assert await conn.run_sync(differences) == []
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert CHAT_TABLES <= tables


async def test_migrating_twice_and_from_two_replicas_at_once(database_url):
    """Replicas starting together: one runs the migrations, the others find nothing to do."""
    stores = [Store(database_url) for _ in range(3)]
    try:
        # Every migration runs to its end before the stores close, whichever fails.
        outcomes = await asyncio.gather(*(s.migrate() for s in stores), return_exceptions=True)
        assert not [o for o in outcomes if isinstance(o, BaseException)], outcomes
        await stores[0].migrate()
        async with stores[0].engine.connect() as conn:
            assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all() == [
                ScriptDirectory(str(Path(migrations.__file__).parent)).get_current_head()]
    finally:
        for s in stores:
            await s.close()


def test_processes_starting_on_a_new_sqlite_file_at_once_all_migrate(tmp_path):
    """Three starts released together on a new file, 40 times (threads with their own event loops,
    as processes have). Turning a new file to WAL mode, SQLite refuses all but one at once rather
    than wait (it would deadlock): before the stores tried again, about one round in twelve failed."""
    failures: list[str] = []

    async def start(url: str, together: threading.Barrier) -> None:
        store = Store(url)
        try:
            together.wait(10)
            await store.migrate()
        except Exception as exc:  # noqa: BLE001 - counted: the test fails on any
            failures.append(f"{url}: {exc!r}")
        finally:
            await store.close()

    for round_ in range(40):
        url, together = f"sqlite+aiosqlite:///{tmp_path / f'new-{round_}.db'}", threading.Barrier(3)
        starts = [threading.Thread(target=asyncio.run, args=(start(url, together),)) for _ in range(3)]
        for t in starts:
            t.start()
        for t in starts:
            t.join(60)
    assert not failures, failures[:3]


# What create_all and the hand-written column patches left before Alembic, minus some late
# columns (model_versions.desired, deployment.shadow/shadow_percent, steps."autoCollapse"/"icon"),
# and the chat tables as the old SQLite patch made them, or as an operator made them from
# Chainlit's documentation on Postgres ({id}: TEXT or UUID).
THREAD = uuid.uuid4()
PRE_ALEMBIC = [
    """CREATE TABLE model_versions (name VARCHAR(64) PRIMARY KEY, model_path TEXT NOT NULL,
       served_name VARCHAR(128) NOT NULL, flags JSON NOT NULL, interpreter TEXT, prompt_template TEXT NOT NULL,
       templates JSON, sampling JSON NOT NULL, notes TEXT NOT NULL, created_by VARCHAR(128) NOT NULL,
       created_at TIMESTAMP WITH TIME ZONE NOT NULL)""",
    """CREATE TABLE deployment (id INTEGER PRIMARY KEY, active VARCHAR(64), previous VARCHAR(64),
       canary VARCHAR(64), canary_percent INTEGER NOT NULL, updated_by VARCHAR(128) NOT NULL,
       updated_at TIMESTAMP WITH TIME ZONE NOT NULL)""",
    """CREATE TABLE accounts (username VARCHAR(64) PRIMARY KEY, password_hash TEXT NOT NULL, role VARCHAR(16) NOT NULL,
       created_by VARCHAR(64) NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL)""",
    'CREATE TABLE users ("id" {id} PRIMARY KEY, "identifier" TEXT NOT NULL UNIQUE, "metadata" TEXT NOT NULL, '
    '"createdAt" TEXT)',
    'CREATE TABLE threads ("id" {id} PRIMARY KEY, "createdAt" TEXT, "name" TEXT, "userId" {id}, '
    '"userIdentifier" TEXT, "tags" TEXT, "metadata" TEXT)',
    'CREATE TABLE steps ("id" {id} PRIMARY KEY, "name" TEXT NOT NULL, "type" TEXT NOT NULL, '
    '"threadId" {id} NOT NULL, "streaming" BOOLEAN NOT NULL, "output" TEXT, "createdAt" TEXT)',
    """INSERT INTO model_versions VALUES ('v1', '/models/v1', 'v1', '[]', NULL, '{text}', NULL, '{}', 'kept', 'ops',
       '2024-01-02 03:04:05.000000')""",
    "INSERT INTO deployment VALUES (1, 'v1', NULL, NULL, 0, 'ops', '2024-01-02 03:04:05.000000')",
    f"INSERT INTO threads VALUES ('{THREAD}', NULL, 'old chat', NULL, NULL, NULL, NULL)",
    f"INSERT INTO steps VALUES ('{uuid.uuid4()}', 'user', 'user_message', '{THREAD}', false, 'bonjour', '2024-01-02')",
]


async def test_a_database_from_before_alembic_upgrades_in_place(database_url):
    store = Store(database_url)
    try:
        async with store.engine.begin() as conn:
            uuid_type = "UUID" if conn.dialect.name == "postgresql" else "TEXT"
            for statement in PRE_ALEMBIC:
                await conn.exec_driver_sql(statement.replace("{id}", uuid_type))
        await store.migrate()

        v1 = await store.get_version("v1")
        assert v1 is not None and v1.notes == "kept" and (await store.desired_states()) == {"v1": None}
        dep = await store.get_deployment()
        assert (dep.active, dep.shadow, dep.shadow_percent, dep.generation) == ("v1", None, 0, 0)
        async with store.engine.connect() as conn:
            steps = {c["name"] for c in await conn.run_sync(lambda c: inspect(c).get_columns("steps"))}
            assert {"autoCollapse", "icon", "modes", "command", "defaultOpen"} <= steps
            assert (await conn.execute(text('SELECT "output" FROM steps'))).scalars().all() == ["bonjour"]
        # And it takes changes like a new one.
        saved = await store.save_change(change(dep, active=None, previous="v1"))
        assert saved.deployment.generation == 1
    finally:
        await store.close()


async def test_chat_history_round_trip_through_chainlit_on_postgres(postgres):
    """Chainlit's data layer writes a thread (with what 2.12 writes beyond its documented DDL)
    into the migrated Postgres schema, and reads it back: a silently dropped step would be a lost
    chat history (its writes fail with only a warning)."""
    url = postgres.new_database()
    store = Store(url)
    layer = SQLAlchemyDataLayer(conninfo=url)
    try:
        await store.migrate()
        user = await layer.create_user(User(identifier="ann", metadata={"role": "user"}))
        assert user is not None
        thread = str(uuid.uuid4())
        await layer.update_thread(thread, name="greetings", user_id=user.id, metadata={"lang": "fr"}, tags=["t"])
        step = {
            "id": str(uuid.uuid4()), "threadId": thread, "name": "ann", "type": "user_message", "streaming": False,
            "output": "Good morning", "createdAt": datetime.now(UTC).isoformat(), "start": None, "metadata": {},
            "showInput": False, "autoCollapse": False, "defaultOpen": False, "icon": "languages",
            "command": "translate", "isError": False, "waitForAnswer": False, "language": "en",
            # admin.chat_history.HistoryDataLayer hands the composer's modes over as JSON text (Chainlit passes the dict as it is).
            "modes": json.dumps({"from": "en", "to": "fr"}),
        }
        # Unwrapped: outside a chat session, there is no first message to queue the write behind.
        await SQLAlchemyDataLayer.create_step.__wrapped__(layer, step)
        read = await layer.get_thread(thread)
        assert read is not None and read["name"] == "greetings" and read["userIdentifier"] == "ann"
        assert [s["output"] for s in read["steps"]] == ["Good morning"]
        assert await layer.get_thread_author(thread) == "ann"
        async with store.engine.connect() as conn:
            row = (await conn.execute(text('SELECT "autoCollapse", "icon", "modes" FROM steps'))).one()
        assert tuple(row) == (False, "languages", {"from": "en", "to": "fr"})  # JSONB: decoded
    finally:
        await layer.engine.dispose()
        await store.close()


# ---------------------------------------------------------------------------- generation


async def test_each_change_bumps_the_generation_by_one(store):
    assert await store.generation() == 0 and (await store.get_deployment()).generation == 0
    dep = await store.get_deployment()
    for n, name in enumerate(("v1", "v2", "v3"), start=1):
        dep = (await store.save_change(change(dep, active=name))).deployment
        assert dep.generation == n == await store.generation() == (await store.get_deployment()).generation


async def test_a_change_from_a_stale_deployment_is_refused_and_changes_nothing(database_url):
    """Two replicas on one database: B read the deployment before A changed it; B's change is refused."""
    a, b = Store(database_url), Store(database_url)
    try:
        await a.migrate()
        seen_by_b = await b.get_deployment()
        await a.save_change(change(await a.get_deployment(), actor="alice", active="v1"))
        before, audit = await a.get_deployment(), await a.list_audit()

        with pytest.raises(Conflict) as refused:
            await b.save_change(change(seen_by_b, actor="bob", active="v2"))
        assert "changed on another replica meanwhile (generation 1, this replica had 0)" in refused.value.what
        assert "nothing was changed" in refused.value.what and "/status" in refused.value.fix
        assert await b.get_deployment() == before and await b.list_audit() == audit

        # Having read it again, B's change goes through.
        saved = await b.save_change(change(await b.get_deployment(), actor="bob", active="v2"))
        assert (saved.deployment.active, saved.deployment.generation) == ("v2", 2)
    finally:
        await a.close()
        await b.close()


async def test_a_change_waits_for_one_in_flight_then_is_refused(database_url):
    """Two replicas change the same generation at once: B waits on A's lock on the deployment
    (Postgres: the row; SQLite: the database), then finds A's generation and is refused."""
    a, b = Store(database_url), Store(database_url)
    try:
        await a.migrate()
        dep = (await a.save_change(change(await a.get_deployment(), active="v0"))).deployment
        async with a._session.begin() as s:
            await s.run_sync(_write_change, change(dep, active="v1"))  # written, not committed yet
            bs = asyncio.ensure_future(b.save_change(change(dep, active="v2")))
            await asyncio.sleep(0.5)
            assert not bs.done(), "B waits for A's transaction"
        with pytest.raises(Conflict, match="generation 2, this replica had 1"):
            await bs
        assert (await b.get_deployment()).active == "v1" and len(await b.list_audit()) == 2
    finally:
        await a.close()
        await b.close()


async def test_listeners_hear_the_new_generation_when_it_commits(postgres):
    url = postgres.new_database()
    store = Store(url)
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(raw_dsn(url))
    try:
        await store.migrate()
        await listener.add_listener(NOTIFY_CHANNEL, lambda _conn, _pid, _channel, payload: heard.put_nowait(payload))

        dep = (await store.save_change(change(await store.get_deployment(), active="v1"))).deployment
        assert await asyncio.wait_for(heard.get(), 5) == "1" == str(dep.generation)

        # Written but not committed yet: nobody hears of it.
        async with store._session.begin() as s:
            await s.run_sync(_write_change, change(dep, active="v2"))
            await asyncio.sleep(0.5)
            assert heard.empty()
        assert await asyncio.wait_for(heard.get(), 5) == "2"

        # A refused change sends nothing.
        with pytest.raises(Conflict):
            await store.save_change(change(dep, active="v3"))
        await asyncio.sleep(0.3)
        assert heard.empty()
    finally:
        await listener.close()
        await store.close()


# ---------------------------------------------------------------------------- replicas


async def test_replica_records_beat_list_and_leave(store):
    started = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    await store.beat("a", 3, started)
    await store.beat("b", 2, started)
    first = {r.id: r for r in await store.list_replicas()}
    await asyncio.sleep(0.01)
    await store.beat("b", 3, started)
    replicas = await store.list_replicas()
    assert [(r.id, r.generation) for r in replicas] == [("a", 3), ("b", 3)]
    assert replicas[1].heartbeat_at > first["b"].heartbeat_at >= replicas[0].heartbeat_at
    assert replicas[0].started_at.replace(tzinfo=UTC) == started
    await store.leave("a")
    await store.leave("nobody")  # already gone: nothing to do
    assert [r.id for r in await store.list_replicas()] == ["b"]


async def test_an_engine_working_from_a_stale_deployment_is_refused_and_says_why(postgres, tmp_path):
    """Through the facade: replica B, which has not heard of A's change, cannot write over it; the
    refusal is audited and B starts nothing."""
    url = postgres.new_database()
    a = Engine(fake_settings(tmp_path / "a", database_url=url, replica_id="a"))
    b = Engine(fake_settings(tmp_path / "b", database_url=url, replica_id="b"))
    try:
        await a.start()
        await b.start()
        await b.replicas.close()  # B's LISTEN is down: it does not hear of A's change
        await a.register("v1", fake_model(a.settings, "v1"))
        await a.load("v1")
        await b.register("v2", fake_model(b.settings, "v2"))
        with pytest.raises(Conflict, match="changed on another replica meanwhile"):
            await b.load("v2")
        assert b.pool.get("v2") is None and b.router.deployment.generation == 0
        last = (await b.store.list_audit(1))[0]
        assert (last.action, last.outcome) == ("load", "refused") and "generation 1, this replica had 0" in last.detail
        assert await b.store.desired_states() == {"v1": "standby", "v2": None}
    finally:
        await b.close()
        await a.close()


# ---------------------------------------------------------------------------- admin stores on both databases


async def test_usage_counts_add_up_from_writers_at_once_and_a_named_glossary_is_all_or_nothing(store):
    """Twenty adds at once (the first of a month race to insert the row) lose no character; a
    glossary whose entries are refused leaves neither its name nor any term behind."""
    usage = Usage(store.engine)
    await asyncio.gather(*(usage.add("tool", 3, "2026-12") for _ in range(20)))
    await usage.add("tool", 5, "2027-01")
    assert [await usage.characters("tool", m) for m in ("2026-12", "2027-01", "2027-02")] == [60, 5, 0]
    named = NamedGlossaries(store.engine)
    made = await named.create("Travel", "en", "fr", [("station", "gare")], created_by="key:ops")
    with pytest.raises(InvalidArgument, match="the limit is 100"):
        await named.create("Bad", "en", "fr", [("ok", "fine"), ("x" * 101, "y")], created_by="key:ops")
    assert [g.name for g in await named.list()] == ["Travel"]
    async with store.engine.connect() as conn:
        owners = (await conn.execute(text("SELECT DISTINCT owner FROM glossary_terms"))).scalars().all()
    assert owners == [f"glossary:{made.id}"]
    await named.delete(made.id)
    assert await named.list() == []
