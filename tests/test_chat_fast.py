"""The chat end to end, on the fake vLLM server: the real Chainlit app in a subprocess, driven
over its websocket protocol by an admin and a user at the same time.

The tests in this module share one app and run in file order: the last one restarts it.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sqlite3
import time
from pathlib import Path

import httpx
import pytest

from admin import render
from engine import TranslationResult
from tests import chatkit as ck

ADMIN = ("root", "root-password-1")
ALICE = ("alice", "alice-password-1")
NOT_ALLOWED = "not allowed to run admin commands"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("baton-chat")
    # Both stream slowly (7 tokens, about a second per answer), so a switch happens while an
    # answer is in flight and Stop can interrupt one. v2 takes 3 s to start, so a load can be
    # watched: its state is `starting` for those 3 s.
    ck.make_fake_model(d, "v1", token_delay_s=0.15)
    ck.make_fake_model(d, "v2", startup_s=3, token_delay_s=0.15)
    ck.make_fake_model(d, "broken", exit_at_start=True)
    return d


@pytest.fixture(scope="module")
def env(data_dir) -> dict[str, str]:
    # Own port range: engine tests may run fake backends at the same time.
    # A 2 s restart back-off leaves time to see the standby answer while v2 restarts.
    return {**ck.fake_env(data_dir), "BATON_REQUEST_WAIT_S": "8", "BATON_RESTART_BACKOFF_S": "2",
            "BATON_PORT_MIN": "21000", "BATON_PORT_MAX": "21999"}


@pytest.fixture(scope="module")
def app(env):
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def admin(app):
    async with ck.chatting(app.url, *ADMIN) as client:
        yield client


@pytest.fixture(scope="module")
async def alice(app, admin):
    reply = await admin.reply(f"/users add {ALICE[0]} {ALICE[1]} user")
    assert "Added `alice` as user" in reply
    async with ck.chatting(app.url, *ALICE) as client:
        yield client


def body(msg: ck.Msg) -> str:
    return msg.output.split("\n\n", 1)[0]


async def active_version(app) -> str | None:
    return (await ck.healthz(app.url))[1]["active"]


async def active_not_ready(app) -> dict | None:
    """/healthz's body once the active version is no longer ready, else None."""
    health = (await ck.healthz(app.url))[1]
    return health if health["active_state"] != "ready" else None


async def serving_ok(app) -> dict | None:
    code, health = await ck.healthz(app.url)
    return health if code == 200 and health["status"] == "ok" else None


# ------------------------------------------------------------------------------------
async def test_login_needs_the_right_password(app, alice):
    assert await ck.login_status(app.url, "alice", "wrong-password") == 401
    assert await ck.login_status(app.url, "nobody", "whatever-password") == 401
    assert await ck.login_status(app.url, *ALICE) == 200
    secret = app.data_dir / "chainlit_auth_secret"
    assert secret.stat().st_mode & 0o777 == 0o600


async def test_nothing_to_translate_yet_is_explained_not_crashed(app, alice):
    # No version is loaded: the user waits (with a visible waiting message), then gets a
    # readable explanation instead of a stack trace.
    env_wait = float(app.env["BATON_REQUEST_WAIT_S"])
    before = len(alice.order)
    msgs = await alice.ask("Good morning", timeout=env_wait + 30)
    waiting = [alice.messages[i] for i in alice.order[before:] if "Waiting for a model version" in alice.messages[i].output]
    assert waiting and all(m.removed for m in waiting), "a waiting message is shown, then removed"
    assert "No model version could answer" in msgs[-1].output
    assert "Traceback" not in msgs[-1].output


async def test_user_sees_no_admin_commands_and_cannot_run_them(app, admin, alice):
    assert [c["id"] for c in alice.commands] == ["help", "tm", "glossary"]
    assert {"load", "switch", "users"} <= {c["id"] for c in admin.commands}
    before = await ck.healthz(app.url)

    typed = await alice.reply("/load v1 v1")
    popup = await alice.reply("v1", command="switch")  # what the popup would send, forged
    users = await alice.reply("/users add mallory mallory-password admin")
    assert NOT_ALLOWED in typed and NOT_ALLOWED in popup and NOT_ALLOWED in users

    # A forged button (cl.Action) is checked the same way.
    mark = len(alice.order)
    r = await alice.click({"name": "baton_command", "payload": {"command": "/switch v1"}, "label": "x", "id": "forged"})
    assert r.status_code == 200
    await alice.wait_message(NOT_ALLOWED, after=mark)

    assert await ck.healthz(app.url) == before, "nothing changed"
    assert await ck.login_status(app.url, "mallory", "mallory-password") == 401
    assert "Baton translates what you type" in await alice.reply("/help")

    audit = await admin.reply("/audit 10")
    # Counted per user and minute (one row, or two across a minute's end): admin/denials.py.
    counts = re.findall(r"\| alice \| denied \|.*\| (\d+) requests refused in this minute \|", audit)
    assert sum(int(n) for n in counts) >= 4, audit


async def test_admin_loads_and_switches_while_a_user_translates(app, admin, alice):
    # Load v1: the reply comes at once, a live step follows the load, a button switches.
    mark = len(admin.order)
    reply = await admin.reply("/load v1 v1 --dtype float32")
    assert "Loading `v1`" in reply
    ready = await admin.wait_message(r"`v1` is ready", after=mark)
    step = next(m for m in admin.messages.values() if m.type == "tool" and m.name == "Loading v1")
    assert "is **ready**" in step.output and "pid" in step.output
    switch_button = await admin.wait_for(lambda: next((a for a in admin.actions if a["label"] == "Switch to v1"), None),
                                         5, "the switch button")
    assert switch_button["forId"] == ready.id
    assert (await admin.click(switch_button)).status_code == 200
    await admin.wait_message(r"Switched: `v1` now answers", after=mark)
    assert await active_version(app) == "v1"

    # The user translates continuously from now on.
    answers: list[ck.Msg] = []
    sent_at: dict[str, float] = {}  # answer id -> when its request was sent
    stop = asyncio.Event()

    async def user_loop() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            t = time.monotonic()
            msgs = await alice.ask(f"sentence number {i} for the translator please", timeout=60)
            answers.extend(msgs)
            sent_at.update({m.id: t for m in msgs})

    loop = asyncio.create_task(user_loop())
    try:
        await alice.wait_for(lambda: len(answers) >= 2, 30, "two answers from v1")

        # Load v2 (3 s start-up): the command returns before v2 could possibly be ready.
        mark = len(admin.order)
        started = time.monotonic()
        reply = await admin.reply("/load v2 v2")
        assert time.monotonic() - started < 2.0 and "Loading `v2`" in reply
        # The chat stays usable meanwhile, for the admin too: /status answers while v2 starts.
        status = await admin.reply("/status")
        assert time.monotonic() - started < 3.0, "/status answered while v2 was still starting"
        assert "| v2 | starting |" in status, status
        # The live step showed the process while it started.
        step = await admin.wait_for(lambda: next((m for m in admin.messages.values()
                                                  if m.type == "tool" and m.name == "Loading v2"), None), 10, "the v2 step")
        await admin.wait_message(r"`v2` is ready", timeout=30, after=mark)
        progress_updates = [d["output"] for n, d in admin.events if n == "update_message" and d.get("id") == step.id]
        assert any("pid" in o and "port" in o and "starting" in o for o in progress_updates), progress_updates

        # Switch while an answer is streaming from v1: one that has just begun (about a second to go).
        in_flight = await alice.wait_for(
            lambda: next((m for m in alice.messages.values() if m.streamed and not m.final and len(m.tokens) <= 2), None),
            30, "an answer that has just begun streaming")
        switch_sent = time.monotonic()
        switch_reply = await admin.reply("/switch v2")
        assert "Switched: `v2` now answers" in switch_reply and "`v1` stays loaded as standby" in switch_reply
        switched_at = time.monotonic()  # the reply came after the switch was committed
        await alice.wait_for(lambda: in_flight.final, 30, "the answer in flight during the switch to end")
        await alice.wait_for(lambda: len([a for a in answers if a.attribution and a.attribution[0] == "v2"]) >= 2,
                             60, "two answers from v2")
    finally:
        stop.set()
        await loop

    assert answers, "the user got answers"
    for a in answers:
        version, role = a.attribution or (None, None)
        assert version in ("v1", "v2") and role == "active", a.output
        assert body(a).startswith(f"{version} says:"), "the answer comes from the version it names"
        assert "".join(a.tokens) == body(a), "the streamed tokens are the final text"
    assert in_flight.token_at[0] < switch_sent and in_flight.token_at[-1] > switched_at, \
        "the answer was streaming before the switch was sent and still streaming after it was committed"
    assert in_flight.attribution == ("v1", "active"), "the answer in flight when the switch came finished on v1"
    later = [a for a in answers if sent_at[a.id] > switched_at]
    assert later and all(a.attribution[0] == "v2" for a in later), "answers started after the switch come from v2"
    assert await active_version(app) == "v2"


async def test_bad_admin_input_gets_a_clear_message_and_changes_nothing(app, admin):
    before = await ck.healthz(app.url)
    cases = {
        "/switch ghost": "Refused",
        "/switch": "Usage: `/switch NAME [--force]`",
        "/canary v1 lots": "PERCENT must be a whole number",
        "/canary v1 150": "PERCENT must be between 1 and 99",
        "/load v3 ../../../etc": "outside the allowed model roots",
        "/load v3 v1 --host 0.0.0.0": "is not allowed",
        "/load v3 v1 --template 'no text field'": "no {text} field",
        "/load v3 v1 --max-tokens lots": "--max-tokens must be a whole number",
        "/load v3 v1 --max-tokens 0": "--max-tokens must be between 1 and 32768",
        "/load v3 v1 --template": "--template needs a value",
        '/load v3 "v1': "Check the quotes",
        "/unload v2": "is serving as active",
        "/logs v1 many": "N must be a whole number",
        "/users add bob short": "8-256 characters",
        "/users remove root": "cannot remove your own account",
        "/frobnicate": "Unknown command",
    }
    for line, expected in cases.items():
        reply = await admin.reply(line)
        assert expected in reply, f"{line!r} -> {reply!r}"
    assert await ck.healthz(app.url) == before
    assert "v3" not in await admin.reply("/status"), "nothing was registered"


async def test_a_version_that_cannot_start_reports_why_with_its_log(app, admin):
    mark = len(admin.order)
    await admin.reply("/load broken broken")
    failed = await admin.wait_message(r"`broken` failed to start", timeout=30, after=mark)
    assert "exit code 3" in failed.output and "refusing to start (exit_at_start)" in failed.output
    assert await active_version(app) == "v2"


async def test_canary_promote_rollback_and_reload_a_registered_version(app, admin, alice):
    canary = await admin.reply("/canary v1 30")
    assert "Canary on: `v1` answers 30% of conversations" in canary
    assert (await ck.healthz(app.url))[1]["canary"] == "v1"
    assert "Promoted: `v1`" in await admin.reply("/promote")
    assert "There is no canary to promote" in await admin.reply("/promote")
    assert "Rolled back: `v2`" in await admin.reply("/rollback")
    assert await active_version(app) == "v2"

    # Unload the standby: it is no longer the standby, so a rollback is refused, and `/load v1`
    # alone brings it back.
    assert "Unloaded `v1`" in await admin.reply("/unload v1")
    assert "| v1 | registered | unloaded |" in await admin.reply("/status")
    assert "There is no previous version to roll back to" in await admin.reply("/rollback")
    assert await active_version(app) == "v2"
    mark = len(admin.order)
    assert "Loading `v1`" in await admin.reply("/load v1")
    await admin.wait_message(r"`v1` is ready", after=mark)
    assert "fake server for v1" in await admin.reply("/logs v1 5")
    assert "fake server for v1" in await admin.reply("v1 5", command="logs"), "the popup form works too"

    audit = await admin.reply("/audit 40")
    for action in ("canary", "promote", "rollback", "unload", "load", "users-add"):
        assert f"| root | {action} |" in audit, action
    assert "| supervisor | load |" in audit


async def test_a_crash_fails_over_to_the_standby_and_the_answer_says_so(app, admin, alice):
    # v1 was unloaded and loaded again above, so it is no standby: two switches make it one.
    assert "Switched" in await admin.reply("/switch v1")
    assert "Switched" in await admin.reply("/switch v2")
    assert (await ck.healthz(app.url))[1]["standby"] == "v1"
    status = await admin.reply("/status")
    row = next(line for line in status.splitlines() if line.startswith("| v2 |"))
    os.kill(int(row.split("|")[5]), 9)
    health = await ck.wait_until(lambda: active_not_ready(app), 10, "the crash of v2 to be noticed")
    assert health["status"] == "degraded" and health["standby"] == "v1", health
    answer = (await alice.ask("the active version just crashed"))[-1]
    assert answer.attribution == ("v1", "standby"), answer.output
    assert "answered by standby v1" in answer.output
    health = await ck.wait_until(lambda: serving_ok(app), 30, "the supervisor to restart v2",
                                 detail=lambda: ck.healthz(app.url))
    assert health["active"] == "v2" and health["active_state"] == "ready", health
    assert (await alice.ask("and it is back"))[-1].attribution == ("v2", "active")


async def test_an_answer_cut_by_a_dying_backend_is_replaced_by_a_whole_one(app, admin, alice):
    """v2 (active, slow) is killed mid-answer: the partial text disappears and the standby v1's
    whole answer takes its place, saying so."""
    await ck.wait_until_healthy(app.url, 30)
    status = await admin.reply("/status")
    pid = int(next(line for line in status.splitlines() if line.startswith("| v2 |")).split("|")[5])
    mark = len(alice.order)
    await alice.send("one two three four five six seven eight")
    streaming = await alice.wait_for(
        lambda: next((alice.messages[i] for i in alice.order[mark:]
                      if alice.messages[i].streamed and len(alice.messages[i].tokens) >= 2), None), 30, "a few tokens")
    assert streaming.output.startswith("v2 says:")
    os.kill(pid, 9)
    await alice.wait_for(lambda: streaming.final and streaming.attribution, 30, "the answer to be completed")
    assert streaming.attribution == ("v1", "standby"), streaming.output
    assert body(streaming).startswith("v1 says:") and "v2 says" not in streaming.output
    assert body(streaming).endswith("eight"), "the whole answer, not the rest of the cut one"
    assert "🔁 Version v2 stopped answering" in streaming.output
    await ck.wait_until_healthy(app.url, 30)  # v2 restarted


async def test_stop_keeps_the_partial_translation(alice):
    mark = len(alice.order)
    await alice.send("one two three four five six seven eight")
    streaming = await alice.wait_for(
        lambda: next((alice.messages[i] for i in alice.order[mark:]
                      if alice.messages[i].streamed and len(alice.messages[i].tokens) >= 2), None), 30, "a few tokens")
    await alice.stop()
    await alice.wait_for(lambda: streaming.final, 10, "the stopped answer to be completed")
    assert "Stopped: the partial translation above (from `v2`) is kept" in streaming.output
    partial = body(streaming)
    assert partial.startswith("v2 says:") and not partial.endswith("eight"), partial


async def test_the_composer_pickers_set_the_pair_and_are_checked(alice):
    assert {m["name"] for m in alice.modes} == {"From", "To"}, "the pair is beside the message box"
    alice.pick(source="en", target="de")
    answer = await alice.ask("hello")
    assert answer, [n for n, _ in alice.events[-20:]]
    assert "English to German" in body(answer[-1])
    assert "**English → German** · _Translated by" in answer[-1].output, "the answer names its pair"
    alice.pick(target="klingon")  # a forged value: the browser's list has no such option
    refused = await alice.ask("hello again")
    assert "'klingon' is not a target language Baton knows" in refused[-1].output
    assert "Nothing was translated" in refused[-1].output and "_Translated by" not in refused[-1].output
    alice.pick(target="de")
    assert "English to German" in body((await alice.ask("hello again"))[-1])


async def test_users_add_keeps_no_password_in_history(app, admin):
    reply = await admin.reply("/users add bob bob-secret-pw")
    assert "Added `bob` as user" in reply
    typed = admin.sent[-1]  # the server echoes a user message only when it changes it
    masked = await admin.wait_for(lambda: admin.messages.get(typed), 5, "the typed line to be masked")
    assert masked.output == "/users add bob ••••••••"
    assert await ck.login_status(app.url, "bob", "bob-secret-pw") == 200

    # The data layer writes in background tasks. The last write for a message is its run step
    # (the reply's parent), closed with the masked input: wait for it, then look for the password.
    def stored() -> bool:
        with contextlib.closing(sqlite3.connect(app.data_dir / "baton.db")) as db:
            return db.execute("""SELECT count(*) FROM steps reply JOIN steps run ON run.id = reply.parentId
                                 WHERE reply.output LIKE 'Added `bob` as user%' AND run.name = 'on_message'
                                 AND run.input = '/users add bob ••••••••' AND run."end" IS NOT NULL""").fetchone()[0] == 1
    await ck.wait_until(stored, 10, "the reply and its closed run step, with the masked command, in the history")
    with contextlib.closing(sqlite3.connect(app.data_dir / "baton.db")) as db:
        leaks = db.execute("SELECT count(*) FROM steps WHERE output LIKE '%bob-secret-pw%' OR input LIKE '%bob-secret-pw%'"
                           ).fetchone()[0]
        leaks += db.execute("SELECT count(*) FROM threads WHERE name LIKE '%bob-secret-pw%'").fetchone()[0]
        leaks += db.execute("SELECT count(*) FROM audit_events WHERE arguments LIKE '%bob-secret-pw%'").fetchone()[0]
    assert leaks == 0
    bob = await ck.connect(app.url, "bob", "bob-secret-pw")
    assert "Removed `bob`" in await admin.reply("/users remove bob")
    assert await ck.login_status(app.url, "bob", "bob-secret-pw") == 401
    # An open session of a removed account is cut at once (tests/test_admin_security.py: every route).
    await ck.wait_until(lambda: not bob.sio.connected, 10, "bob's open chat to be disconnected")
    await bob.close()
    listing = await admin.reply("/users list")
    assert "| alice | user |" in listing and "| root | admin |" in listing and "bob" not in listing


async def test_healthz_and_metrics_answer(app):
    code, health = await ck.healthz(app.url)
    assert code == 200 and health["status"] == "ok" and health["active"] == "v2" and health["active_state"] == "ready"
    assert health["standby"] == "v1"
    async with httpx.AsyncClient(base_url=app.url) as http:
        metrics = await http.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")
    assert 'baton_requests_total{outcome="ok",version="v2"}' in metrics.text
    assert 'baton_switches_total{action="switch"}' in metrics.text


async def test_restart_keeps_the_active_version_and_the_history(app, env, admin, alice):
    token, thread_id = alice.token, alice.thread_id
    assert thread_id
    status = await admin.reply("/status")
    pids = [int(p) for line in status.splitlines() if line.startswith("| v")
            for p in [line.split("|")[5].strip()] if p.isdigit()]
    assert pids
    await admin.close()
    await alice.close()
    assert app.stop() == 0
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), "no backend outlives the app"

    again = ck.launch_app(env, admin=ADMIN)
    try:
        # Both versions start again in the background; v2 takes 2 s, so the standby v1 answers first.
        client = ck.ChatClient(again.url, token, "alice")  # the login survives: the secret was kept
        await client.connect(thread_id)
        resumed = await client.wait_for(lambda: next((d for n, d in client.events if n == "resume_thread"), None),
                                        10, "the resumed thread")
        outputs = [s.get("output", "") for s in resumed["steps"]]
        assert any("_Translated by **v1**" in o for o in outputs) and any("_Translated by **v2**" in o for o in outputs)
        assert [c["id"] for c in client.commands] == ["help", "tm", "glossary"], "commands are sent again on resume"
        langs = client.chosen_modes()
        assert langs == {"source": "en", "target": "de"}, "the thread's languages come back in the pickers"

        msgs = await client.ask("back after the restart", timeout=60)
        assert msgs[-1].attribution == ("v1", "standby"), msgs[-1].output
        assert "v2 is starting; answered by standby v1" in msgs[-1].output
        await ck.wait_until_healthy(again.url, 30)
        msgs = await client.ask("and v2 is back", timeout=60)
        assert msgs[-1].attribution == ("v2", "active"), msgs[-1].output
        assert (await ck.healthz(again.url))[1]["active"] == "v2"
        assert thread_id in {t["id"] for t in await ck.threads(again.url, token)}
        await client.close()
    finally:
        again.stop()


def test_an_empty_translation_is_explained_not_blank():
    empty = TranslationResult(version="v1", role="active", text="", ttft_ms=0, total_ms=50, prompt_tokens=9,
                              completion_tokens=1, finish_reason="stop", served_by="v1")
    shown = render.answer("", empty, None, stopped=False)
    assert shown.startswith("_Translated by **v1** (active)")
    assert "No text came back for this" in shown
