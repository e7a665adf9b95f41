"""Issue 20's attacks on the admin side, each through the real app (tests/chatkit.py): a removed
account's sessions and data, the audit flood, markdown injection into the admin's chat, and
secrets at rest. Each test performs the attack, then checks that the legitimate use still works."""
from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import stat

import httpx
import pytest
import socketio
from markdown_it import MarkdownIt

from admin.denials import Denials
from engine.masking import mask
from tests import chatkit as ck

ADMIN = ("root", "root-password-1")
BOB = ("bob", "bob-password-12")
BOB_AGAIN = ("bob", "another-bob-password")


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    d = tmp_path_factory.mktemp("baton-admin-security")
    ck.make_fake_model(d, "v1", prefix="v1:")
    with ck.running_app({**ck.fake_env(d), "BATON_PORT_MIN": "33100", "BATON_PORT_MAX": "33199"}, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def admin(app):
    client = await ck.connect(app.url, *ADMIN)
    assert "Loading" in await client.reply("/load v1 v1")
    await client.wait_message(r"`v1` is ready", timeout=30)
    assert "Switched" in await client.reply("/switch v1")
    yield client
    await client.close()


async def get(app: ck.App, path: str, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=app.url, cookies={"access_token": token}) as http:
        return await http.get(path)


async def post_threads(app: ck.App, token: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=app.url, cookies={"access_token": token}) as http:
        return await http.post("/project/threads", json={"pagination": {"first": 50}, "filter": {}})


async def polling_connect(app: ck.App, cookies: list[tuple[str, str]]) -> str:
    """Open socket.io by long-polling, by hand, with these Cookie lines: "connected" or "refused"."""
    auth = '{"sessionId": "%s", "clientType": "webapp", "userEnv": "{}", "chatProfile": "", "threadId": ""}'
    async with httpx.AsyncClient(base_url=f"{app.url}/ws/socket.io/", headers=cookies) as http:
        opened = await http.get("", params={"EIO": "4", "transport": "polling"})
        sid = re.search(r'"sid":"([^"]+)"', opened.text)
        assert opened.status_code == 200 and sid, opened.text
        params = {"EIO": "4", "transport": "polling", "sid": sid.group(1)}
        await http.post("", params=params, content="40" + auth % sid.group(1))
        answer = (await http.get("", params=params)).text
    return "connected" if answer.startswith("40") else "refused"


# 5. a removed account -------------------------------------------------------------------
async def bob_with_history(app: ck.App) -> tuple[ck.ChatClient, str]:
    """bob translates a line and a file; his chat and the URL of his translated file."""
    bob = await ck.connect(app.url, *BOB)
    assert "v1:" in (await bob.ask("Good morning"))[-1].output
    ref = await bob.upload("note.txt", b"Hello there.\n", "text/plain")
    msgs = await bob.ask("", files=[ref])
    assert any("segments translated" in m.output for m in msgs), [m.output for m in msgs]
    thread = (await get(app, f"/project/thread/{bob.thread_id}", bob.token)).json()
    url = next(e["url"] for e in thread["elements"] if e["url"] and e["url"].startswith("/baton/files/"))
    assert (await get(app, url, bob.token)).status_code == 200
    return bob, url


async def test_a_removed_account_loses_its_sessions_and_a_new_one_of_that_name_starts_empty(app, admin):
    assert "Added `bob`" in await admin.reply(f"/users add {BOB[0]} {BOB[1]} user")
    bob, file_url = await bob_with_history(app)
    old_token, old_thread = bob.token, bob.thread_id
    assert [t["id"] for t in (await post_threads(app, old_token)).json()["data"]] == [old_thread]

    removed = await admin.reply("/users remove bob")
    assert "Removed `bob`" in removed, removed
    # His open chat is cut at once, and his cookie opens nothing any more: not the history, not the
    # files, not a new chat.
    await ck.wait_until(lambda: not bob.sio.connected, 10, "bob's open chat to be disconnected")
    assert (await post_threads(app, old_token)).status_code == 401
    assert (await get(app, f"/project/thread/{old_thread}", old_token)).status_code == 401
    assert (await get(app, file_url, old_token)).status_code == 401
    with pytest.raises(socketio.exceptions.ConnectionError):
        await ck.ChatClient(app.url, old_token, "bob").connect(old_thread)
    # The page and the login form still work in his browser, which still holds the dead cookie.
    assert (await get(app, "/", old_token)).status_code == 200

    # A new account named bob is a new person: none of the old bob's threads or files, and the old
    # cookie stays dead.
    assert "Added `bob`" in await admin.reply(f"/users add {BOB_AGAIN[0]} {BOB_AGAIN[1]} user")
    assert (await post_threads(app, old_token)).status_code == 401
    async with httpx.AsyncClient(base_url=app.url, cookies={"access_token": old_token}) as http:
        relogin = await http.post("/login", data={"username": BOB_AGAIN[0], "password": BOB_AGAIN[1]})
    assert relogin.status_code == 200, relogin.text
    new_token = relogin.cookies["access_token"]
    assert (await post_threads(app, new_token)).json()["data"] == []
    assert (await get(app, f"/project/thread/{old_thread}", new_token)).status_code != 200
    assert (await get(app, file_url, new_token)).status_code == 404
    # The old cookie in a second Cookie line (engine.io joins the lines with a comma, so "; access_token="
    # starts a cookie of its own) behind a harmless first one still opens no
    # socket: it would log in as the new bob.
    assert await polling_connect(app, [("Cookie", "theme=dark"), ("Cookie", f"; access_token={old_token}")]) == "refused"
    assert await polling_connect(app, [("Cookie", f"access_token={new_token}")]) == "connected"
    # ... who can use the chat and keep a history of his own.
    async with ck.chatting(app.url, *BOB_AGAIN) as new_bob:
        assert "v1:" in (await new_bob.ask("Good evening"))[-1].output
        assert [t["id"] for t in (await post_threads(app, new_token)).json()["data"]] == [new_bob.thread_id]
    # The admin was told what happened to the old bob's data, and so is the audit.
    assert "1 open chat ended; history deleted: 1 conversation, 2 files" in removed, removed  # his upload too
    audit = await admin.reply("/audit 5")
    assert "users-remove" in audit and "history deleted" in audit, audit



async def test_a_name_freed_before_this_fix_or_halfway_starts_empty_too(app, admin):
    """An account removed by an older Baton (only its row deleted) left its history under its name:
    making an account of that name deletes it first."""
    assert "Added `dave`" in await admin.reply("/users add dave dave-password-1 user")
    async with ck.chatting(app.url, "dave", "dave-password-1") as dave:
        assert "v1:" in (await dave.ask("Good morning"))[-1].output
    with contextlib.closing(sqlite3.connect(app.data_dir / "baton.db")) as db, db:
        db.execute("DELETE FROM accounts WHERE username = 'dave'")
    added = await admin.reply("/users add dave another-dave-password user")
    token = await ck.login(app.url, "dave", "another-dave-password")
    assert (await post_threads(app, token)).json()["data"] == []
    assert "Added `dave`" in added and "an earlier account of this name" in added, added

# 6. the audit flood ----------------------------------------------------------------------
async def test_denied_admin_calls_are_counted_per_key_and_minute_and_the_audit_filters(app, admin):
    user_key = await ck.make_key(admin, "flooder", "user")
    admin_key = await ck.make_key(admin, "ops", "admin")
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {user_key}"}) as http:
        for _ in range(8):  # in parallel: the count must not lose any
            codes = await asyncio.gather(*(http.get("/admin/v1/versions") for _ in range(25)))
            assert {r.status_code for r in codes} == {403}
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {admin_key}"}) as http:
        rows = (await http.get("/admin/v1/audit", params={"n": 20})).json()
        denied = [r for r in rows if r["action"] == "admin-api-denied"]
        # 200 refusals, within a minute or two: one row per minute, and the counts add up.
        assert 1 <= len(denied) <= 2 and all(r["actor"] == "key:flooder" for r in denied), denied
        counts = [int(re.match(r"(\d+) requests? refused in this minute", r["detail"]).group(1)) for r in denied]
        assert sum(counts) == 200, denied
        # The admin's own action is still in the last 20.
        assert any(r["action"] == "keys-add" and r["arguments"] and "ops" in r["arguments"] for r in rows), rows
        # Filters, on the API ...
        only = (await http.get("/admin/v1/audit", params={"action": "keys-add", "actor": "root"})).json()
        assert only and {(r["action"], r["actor"]) for r in only} == {("keys-add", "root")}, only
        assert (await http.get("/admin/v1/audit", params={"actor": "nobody"})).json() == []
        bad = await http.get("/admin/v1/audit", params={"action": "x" * 200})
        assert bad.status_code == 400 and "action" in bad.text, bad.text
    # ... and in the chat.
    chat = await admin.reply("/audit 50 --action admin-api-denied")
    assert "admin-api-denied" in chat and "keys-add" not in chat, chat
    chat = await admin.reply("/audit --actor root --action keys-add")
    assert "keys-add" in chat and "admin-api-denied" not in chat, chat
    assert "Usage" in await admin.reply("/audit --colour red")



async def test_a_users_refused_admin_commands_are_counted_too(app, admin):
    assert "Added" in await admin.reply("/users add erin erin-password-1 user")
    async with ck.chatting(app.url, "erin", "erin-password-1") as erin:
        for _ in range(12):
            assert "not allowed" in await erin.reply("/status")
    rows = await admin.reply("/audit 50 --action denied --actor erin")
    counts = [int(n) for n in re.findall(r"(\d+) requests? refused in this minute", rows)]
    assert 1 <= len(counts) <= 2 and sum(counts) == 12, rows

# 7. markdown injection -------------------------------------------------------------------
HOSTILE = "![x](https://127.0.0.1:9/i.png) [click](https://example.com) <https://example.com/a>"
IN_A_PATH = "![x](https:127.0.0.1:9)"  # the probe: no slash, so it stays one path segment


def live_constructs(markdown: str) -> list[str]:
    """The images and links a markdown renderer would make of `markdown` (CommonMark and tables,
    as the chat renders it)."""
    def walk(tokens: list) -> list:
        return [t for token in tokens for t in (token, *walk(token.children or []))]
    parsed = MarkdownIt("commonmark").enable("table").parse(markdown)
    return [t.type for t in walk(parsed) if t.type in ("image", "link_open")]


async def test_text_from_outside_reaches_the_admins_chat_as_inert_text(app, admin):
    user_key = await ck.make_key(admin, "prober", "user")
    async with httpx.AsyncClient(base_url=app.url, headers={"Authorization": f"Bearer {user_key}"}) as http:
        assert (await http.get(f"/admin/v1/versions/{IN_A_PATH}")).status_code == 403
    audit = await admin.reply("/audit 3")  # the refusal is the last action
    assert "127.0.0.1:9" in audit and live_constructs(audit) == [], audit
    # An admin's own mistyped name in a refusal, a user's glossary and file name: inert too.
    refused = await admin.reply(f"/switch '{HOSTILE}'")
    assert "Refused" in refused and live_constructs(refused) == [], refused
    assert "Added" in await admin.reply("/users add carol carol-password-1 user")
    async with ck.chatting(app.url, "carol", "carol-password-1") as carol:
        assert "Added" in await carol.reply(f"/glossary add {HOSTILE} = gare")
        listed = await carol.reply("/glossary list")
        assert "example.com" in listed and live_constructs(listed) == [], listed
        ref = await carol.upload(f"{HOSTILE}.txt", b"Hello there.\n", "text/plain")
        msgs = await carol.ask("", files=[ref])
        assert any("segments translated" in m.output for m in msgs)
        assert all(live_constructs(m.output) == [] for m in msgs), [m.output for m in msgs]
    # Markdown that Baton writes itself still renders: the audit is a table.
    assert "| when (UTC) | who |" in audit


# 10. secrets at rest ---------------------------------------------------------------------
def stored_text(app: ck.App) -> str:
    """Everything the chat history and the audit keep, as one text."""
    with contextlib.closing(sqlite3.connect(app.data_dir / "baton.db")) as db:
        rows = [*db.execute("SELECT name, input, output FROM steps"), *db.execute("SELECT name, '', '' FROM threads"),
                *db.execute("SELECT arguments, detail, '' FROM audit_events")]
    return "\n".join(" ".join(str(v) for v in row) for row in rows)


async def test_credentials_typed_in_a_command_are_masked_wherever_it_is_kept(app, admin):
    lines = ["/load r1 --url http://user:Pa55word-in-url@127.0.0.1:9/v1",
             "/load r2 r2 --api-key=Sekret-flag-value", "/load r3 r3 --hf-token Sekret-token-value"]
    for line in lines:
        mark = len(admin.order)
        reply = await admin.reply(line)
        assert "Refused" in reply and "Sekret" not in reply and "Pa55word" not in reply, reply
        # The line as the chat shows it from now on: masked.
        typed = await admin.wait_for(lambda: next((m for m in (admin.messages[i] for i in admin.order[mark:])
                                                   if m.type == "user_message" and "***" in m.output), None),
                                     10, "the typed line to be masked")
        assert "Sekret" not in typed.output and "Pa55word" not in typed.output, typed.output

    def masked_everywhere() -> bool:
        stored = stored_text(app) + app.log()
        return "***" in stored and not any(s in stored for s in ("Pa55word", "Sekret"))
    def leaks() -> list[str]:
        return [line for line in (stored_text(app) + app.log()).splitlines() if "Pa55word" in line or "Sekret" in line]
    await ck.wait_until(masked_everywhere, 10, "no credential in the history, the audit or the log", detail=leaks)
    # What is not secret stays readable: the host of the URL, the flag's name.
    assert "127.0.0.1:9" in stored_text(app) and "--hf-token" in stored_text(app)


def test_the_data_directory_is_private(app, admin):
    """Owner only: the directory 0700, its files 0600, the database's -wal and -shm too, and files
    that were there before the app started."""
    assert stat.S_IMODE(app.data_dir.stat().st_mode) == 0o700
    loose = [(str(p.relative_to(app.data_dir)), oct(stat.S_IMODE(p.stat().st_mode))) for p in app.data_dir.rglob("*")
             if not p.is_symlink() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert loose == [], loose
    assert {"baton.db", "baton.db-wal", "baton.db-shm"} <= {p.name for p in app.data_dir.iterdir()}


def test_masking_hides_credentials_and_keeps_the_rest():
    assert mask("--url https://u:p@host:1/v1 --hf-token=t1 --api-key t2") == (
        "--url https://***@host:1/v1 --hf-token=*** --api-key ***")
    assert mask('{"flags": ["--password", "t3"]}') == '{"flags": ["--password", "***"]}'
    # Quoted values, a password holding @ and commas: nothing of the secret is left.
    assert mask("""--hf-token "hf_a b" --api-key 'sk-1' --token a,b http://u:p@ss@host/v1""") == (
        "--hf-token *** --api-key *** --token *** http://***@host/v1")
    kept = "--max-tokens 5 --api-key-env VAR --tokenizer tok --template-terminology x http://host/a@b"
    assert mask(kept) == kept


async def test_counted_refusals_return_once_stored_and_a_new_minute_starts_a_row():
    """admin/denials.py alone, with slow writes: 50 refusals at once are stored as one row holding
    50 before the last of them returns; the next minute gets a row of its own."""
    now = [600.0]
    rows: dict[int, str] = {}

    async def insert(actor: str, action: str, args: dict[str, object], outcome: str, detail: str) -> int:
        await asyncio.sleep(0.01)
        rows[len(rows) + 1] = detail
        return len(rows)

    async def amend(row: int, detail: str) -> None:
        await asyncio.sleep(0.01)
        rows[row] = detail

    denials = Denials(insert, amend, clock=lambda: now[0])
    await asyncio.gather(*(denials.refused("key:x", "admin-api-denied", {"at": "/p"}) for _ in range(50)))
    assert rows == {1: "50 requests refused in this minute"}
    now[0] += 60
    await denials.refused("key:x", "admin-api-denied", {"at": "/p"})
    assert rows[2] == "1 request refused in this minute"
