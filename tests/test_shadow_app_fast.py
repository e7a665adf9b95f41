"""Shadow traffic and users' votes through the real app on the fake server: `/shadow` in the chat,
the admin API and the CLI; thumbs up and down through Chainlit's own HTTP feedback route, counted in
/metrics for the version that answered.

The tests share one app and run in file order: the last one restarts it. The fake server answers
`<name> says: <prompt words>`: v2 answers differently from v1, `twin` (answer_as v1) exactly like it.
"""
from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from tests import chatkit as ck

ROOT = Path(__file__).resolve().parent.parent
ADMIN = ("root", "root-password-1")
ALICE = ("alice", "alice-password-1")
BOB = ("bob", "bob-password-12")
OK, REFUSED, USAGE = 0, 1, 2


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("baton-shadow")
    for name, knobs in {"v1": {}, "v2": {}, "twin": {"answer_as": "v1"}, "stuck": {"stall_after": 0},
                        "hung": {"hang": True}, "broken": {"exit_at_start": True}}.items():
        ck.make_fake_model(d, name, **knobs)
    # Short stall deadlines: a stalled shadow copy gives up (and is reported) within 2 s.
    return {**ck.fake_env(d), "BATON_PORT_MIN": "28700", "BATON_PORT_MAX": "28899",
            "BATON_FIRST_TOKEN_TIMEOUT_S": "2", "BATON_BETWEEN_TOKENS_TIMEOUT_S": "2",
            "BATON_SHADOW_MAX_IN_FLIGHT": "2", "BATON_RESTART_BACKOFF_S": "0.5"}


@pytest.fixture(scope="module")
def app(env):
    with ck.running_app(env, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def admin(app):
    client = await ck.connect(app.url, *ADMIN)
    for name in ("v1", "v2", "twin", "stuck", "hung", "broken"):
        assert "Loading" in await client.reply(f"/load {name} {name}")
    for name in ("v1", "v2", "twin", "stuck"):
        await client.wait_message(rf"`{name}` is ready", timeout=30)
    await client.wait_message(r"`broken` failed to start", timeout=30)
    assert "Switched" in await client.reply("/switch v1")
    yield client
    await client.close()


@pytest.fixture(scope="module")
async def alice(app, admin):
    for user, password in (ALICE, BOB):
        assert "Added" in await admin.reply(f"/users add {user} {password} user")
    async with ck.chatting(app.url, *ALICE) as client:
        yield client


@pytest.fixture(scope="module")
async def key(admin) -> str:
    return await ck.make_key(admin, "pipeline", "admin")


async def translate(chat: ck.ChatClient, text: str) -> ck.Msg:
    answer = (await chat.ask(text))[-1]
    assert answer.attribution == ("v1", "active"), answer.output
    assert answer.output.startswith("v1 says:"), "the user gets the active version's answer, never the shadow's"
    return answer


def numbers(stats: str) -> tuple[int, float | None, int]:
    """(samples, agreement, skipped) from a /shadow reply."""
    samples = re.search(r"(\d+) samples", stats)
    agreement = re.search(r"\(chrF, 100 = identical\): \*\*([\d.]+)\*\*", stats)
    skipped = re.search(r"(\d+) skipped", stats)
    return (int(samples.group(1)) if samples else 0, float(agreement.group(1)) if agreement else None,
            int(skipped.group(1)) if skipped else 0)


async def stats_after(admin: ck.ChatClient, answers: int) -> str:
    """The /shadow reply once each of `answers` copied at 100 % has finished or was skipped (a loaded
    machine may still run BATON_SHADOW_MAX_IN_FLIGHT copies when the next answer is done)."""
    seen = [""]

    async def accounted() -> str | None:
        seen[0] = await admin.reply("/shadow")
        samples, _, skipped = numbers(seen[0])
        return seen[0] if samples + skipped >= answers else None

    return await ck.wait_until(accounted, 20, f"{answers} copies accounted for", interval=0.2,
                               detail=lambda: seen[0])


async def deployment(app: ck.App) -> dict:
    return (await ck.healthz(app.url))[1]


# shadow in the chat --------------------------------------------------------------------------
async def test_refused_shadows_change_nothing(app, admin, alice):
    before = await deployment(app)
    assert "No version is shadowing" in await admin.reply("/shadow")
    refusals = {
        "/shadow v1 50": "is active: it cannot shadow itself",
        "/shadow hung 50": "'hung' is starting",  # never healthy
        "/shadow broken 50": "'broken' is failed",  # exits at start
        "/shadow ghost 50": "'ghost' is not loaded",
        "/shadow off": "There is no shadow to stop",
        "/shadow v2 0": "PERCENT must be between 1 and 100, not 0",
        "/shadow v2 101": "PERCENT must be between 1 and 100, not 101",
        "/shadow v2": "Usage: `/shadow NAME PERCENT",
    }
    for command, why in refusals.items():
        reply = await admin.reply(command)
        assert why in reply, (command, reply)
    assert "not allowed to run admin commands" in await alice.reply("/shadow v2 50")
    assert await deployment(app) == before, "nothing changed"
    audit = await admin.reply("/audit 40")
    assert audit.count("| shadow | ") == 4 and audit.count("| shadow-off | ") == 1, audit


async def test_a_shadow_is_compared_with_the_users_answers(app, admin, alice):
    reply = await admin.reply("/shadow v2 100")
    assert "Shadow on: `v2` also answers a copy of 100% of requests" in reply
    for i in range(3):
        await translate(alice, f"good morning number {i}")
    samples, agreement, skipped = numbers(await stats_after(admin, 3))
    assert samples >= 1 and agreement is not None and 0 < agreement < 100, "v2's answers differ from v1's"

    status = await admin.reply("/status")
    assert "**shadow:** `v2` (100% of requests copied)" in status
    assert "**Shadow** `v2`" in status and f"{samples} samples" in status and "0 errors" in status
    assert re.search(r"p95 \d+ ms against \d+ ms for the users' answers", status), status
    assert re.search(r"\| v2 \| ready \| standby \| shadow 100% \|", status), status
    assert await ck.metric(app.url, "baton_shadow_requests_total", version="v2", outcome="ok") == samples
    assert await ck.metric(app.url, "baton_shadow_requests_total", version="v2", outcome="skipped") == skipped
    assert await ck.metric(app.url, "baton_shadow_agreement_count", version="v2") == samples

    # A version that answers exactly like the active one agrees fully; its statistics start afresh.
    assert "Shadow on: `twin`" in await admin.reply("/shadow twin 100")
    assert numbers(await admin.reply("/shadow")) == (0, None, 0)
    for i in range(2):
        await translate(alice, f"thank you very much {i}")
    samples, agreement, _ = numbers(await stats_after(admin, 2))
    assert samples >= 1 and agreement == 100.0


async def test_a_failing_shadow_never_affects_the_users(app, admin, alice):
    """A shadow whose answers stall (its port and /health stay fine), then one killed: users'
    answers come whole from v1, without waiting; the copies are bounded, errors counted, and the
    stall is noticed and the shadow restarted like any version."""
    assert "Shadow on: `stuck`" in await admin.reply("/shadow stuck 100")
    for i in range(5):
        started = time.monotonic()
        await translate(alice, f"are you there {i}")
        assert time.monotonic() - started < 1.5, "the answer did not wait for the shadow"
    stats = await ck.wait_until(lambda: _errors(admin), 20, "the stalled copies counted as errors")
    assert "skipped (BATON_SHADOW_MAX_IN_FLIGHT copies were running)" in stats, stats
    audit = await ck.wait_until(lambda: _has(admin, "/audit 30", "| supervisor | unhealthy |"), 20,
                                "the stall noticed by the supervisor")
    assert "stuck" in audit

    # The shadow killed outright: answers are unaffected.
    assert "Shadow on: `v2`" in await admin.reply("/shadow v2 100")
    pid = int(re.search(r"\| v2 \| ready \| [^|]* \| [^|]* \| (\d+) \|", await admin.reply("/status")).group(1))
    os.kill(pid, 9)
    for i in range(2):
        await translate(alice, f"still there {i}")
    assert (await deployment(app))["active"] == "v1"


async def _errors(admin: ck.ChatClient) -> str | None:
    reply = await admin.reply("/shadow")
    m = re.search(r"(\d+) errors", reply)
    return reply if m and int(m.group(1)) >= 1 else None


async def _has(admin: ck.ChatClient, command: str, text: str) -> str | None:
    reply = await admin.reply(command)
    return reply if text in reply else None


async def test_unloading_the_shadow_ends_it(app, admin):
    await ck.wait_until(lambda: _has(admin, "/status", "| v2 | ready |"), 20, "v2 ready again after its crash")
    assert "**shadow:** `v2`" in await admin.reply("/status")
    assert "Unloaded `v2`" in await admin.reply("/unload v2")
    status = await admin.reply("/status")
    assert "shadow" not in status.lower(), status
    assert "No version is shadowing" in await admin.reply("/shadow")


# the admin API and the CLI -------------------------------------------------------------------
async def test_the_admin_api_sets_and_stops_a_shadow(app, alice, key):
    async with httpx.AsyncClient(base_url=f"{app.url}/admin/v1", headers={"Authorization": f"Bearer {key}"}) as http:
        r = await http.post("/deployment/shadow", json={"name": "twin", "percent": 100})
        assert r.status_code == 200, r.text
        view = r.json()
        assert (view["shadow"], view["shadow_percent"], view["shadow_stats"]["samples"]) == ("twin", 100, 0)
        await translate(alice, "one more sentence please")

        async def sampled() -> dict | None:
            stats = (await http.get("/deployment")).json()["shadow_stats"]
            return stats if stats["samples"] >= 1 else None

        stats = await ck.wait_until(sampled, 20, "a shadow sample in the API")
        assert stats["agreement"] == 100.0 and stats["errors"] == 0 and stats["version"] == "twin"
        for body, status, words in (({"name": "v1", "percent": 10}, 409, "cannot shadow itself"),
                                    ({"name": "hung", "percent": 10}, 409, "is starting"),
                                    ({"name": "twin", "percent": 0}, 400, "percent"),
                                    ({"name": "twin", "percent": 101}, 400, "percent")):
            r = await http.post("/deployment/shadow", json=body)
            assert r.status_code == status and words in r.json()["error"]["message"], (body, r.text)
        assert (await http.get("/deployment")).json()["shadow"] == "twin", "refusals changed nothing"
        r = await http.delete("/deployment/shadow")
        assert r.status_code == 200 and r.json()["shadow"] is None and r.json()["shadow_stats"] is None
        r = await http.delete("/deployment/shadow")
        assert r.status_code == 409 and "no shadow to stop" in r.json()["error"]["message"]


def test_the_cli_sets_and_stops_a_shadow(app, key):
    def baton(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
        env.update(BATON_URL=app.url, BATON_API_KEY=key)
        return subprocess.run([sys.executable, "-m", "baton_cli", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=60)

    done = baton("shadow", "twin", "40")
    assert done.returncode == OK and "shadow twin (40 %)" in done.stdout, done
    done = baton("shadow")
    assert done.returncode == OK and "shadow twin: 0 samples" in done.stdout, done
    assert "shadow twin (40 %)" in baton("status").stdout
    done = baton("shadow", "v1", "40")
    assert done.returncode == REFUSED and "cannot shadow itself" in done.stderr, done
    assert baton("shadow", "twin").returncode == USAGE
    assert baton("shadow", "twin", "0").returncode == USAGE
    done = baton("shadow", "off")
    assert done.returncode == OK and "shadow" not in done.stdout, done
    done = baton("shadow", "off")
    assert done.returncode == REFUSED and "no shadow to stop" in done.stderr, done
    assert "No version is shadowing" in baton("shadow").stdout
    assert "shadow" in baton("--help").stdout


# users' votes ---------------------------------------------------------------------------------
def http_as(app: ck.App, chat: ck.ChatClient) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=app.url, cookies={"access_token": chat.token})


async def vote(app: ck.App, chat: ck.ChatClient, for_id: str, value: int, feedback_id: str | None = None,
               comment: str | None = None) -> httpx.Response:
    """What the chat's thumbs buttons send (the UI sends the id it got back when it votes again)."""
    feedback = {"forId": for_id, "threadId": chat.thread_id, "value": value, "id": feedback_id, "comment": comment}
    async with http_as(app, chat) as http:
        return await http.put("/feedback", json={"feedback": feedback, "sessionId": chat.session_id})


def stored_votes(app: ck.App) -> list[tuple[str, int]]:
    with sqlite3.connect(app.data_dir / "baton.db") as db:
        return db.execute('SELECT "forId", value FROM feedbacks ORDER BY "forId"').fetchall()


async def test_the_chat_shows_the_feedback_buttons(app, alice):
    # Chainlit's UI shows thumbs up and down under each answer when the data layer is on.
    async with http_as(app, alice) as http:
        settings = (await http.get("/project/settings", params={"language": "en-US"})).json()
    assert settings["dataPersistence"] is True


async def test_a_thumbs_down_counts_for_the_version_that_answered(app, admin, alice):
    answer = await translate(alice, "where is the station")
    assert answer.raw.get("metadata", {}).get("version") == "v1", "the answer carries its version"
    run = answer.parent_id  # the buttons under an answer rate its run (Chainlit's on_message step)
    assert run and alice.messages[run].type == "run"
    down = await ck.metric(app.url, "baton_feedback_total", version="v1", value="down")
    up = await ck.metric(app.url, "baton_feedback_total", version="v1", value="up")

    r = await vote(app, alice, run, 0)
    assert r.status_code == 200, r.text
    feedback_id = r.json()["feedbackId"]
    assert await ck.metric(app.url, "baton_feedback_total", version="v1", value="down") == down + 1
    # The same vote again, now with a comment (the UI's dialog): one vote, counted once.
    assert (await vote(app, alice, run, 0, feedback_id, "too literal")).status_code == 200
    assert await ck.metric(app.url, "baton_feedback_total", version="v1", value="down") == down + 1
    # Changed to up: the answer holds one vote, up; the counter counts votes cast.
    r = await vote(app, alice, run, 1, feedback_id)
    assert r.status_code == 200 and r.json()["feedbackId"] == feedback_id
    assert await ck.metric(app.url, "baton_feedback_total", version="v1", value="up") == up + 1
    assert await ck.metric(app.url, "baton_feedback_total", version="v1", value="down") == down + 1
    # A vote sent without the id (a second tab, a script) still replaces the answer's vote.
    r = await vote(app, alice, run, 0)
    assert r.json()["feedbackId"] == feedback_id
    assert stored_votes(app).count((run, 0)) == 1 and len([v for v in stored_votes(app) if v[0] == run]) == 1
    # Taken back (clicking the same thumb again).
    async with http_as(app, alice) as http:
        r = await http.request("DELETE", "/feedback", json={"feedbackId": feedback_id})
    assert r.status_code == 200
    assert not [v for v in stored_votes(app) if v[0] == run]
    assert await ck.metric(app.url, "baton_feedback_total", version="v1", value="down") == down + 2


async def test_votes_on_anything_but_ones_own_answers_do_nothing(app, admin, alice):
    bob = await ck.connect(app.url, *BOB)
    try:
        answer = await translate(alice, "how much is this")
        run = answer.parent_id
        r = await vote(app, alice, run, 1)
        assert r.status_code == 200
        alices_vote = r.json()["feedbackId"]
        before_rows = stored_votes(app)
        counted = await ck.metric(app.url, "baton_feedback_total", version="v1", value="down")

        # A step alice wrote herself over the websocket, posing as an answer of v2.
        forged = str(uuid.uuid4())
        handled = alice.count("task_end")
        await alice.sio.emit("client_message", {"message": {
            "threadId": alice.thread_id, "id": forged, "name": "Baton", "type": "assistant_message", "output": "x",
            "createdAt": datetime.now(UTC).isoformat(), "metadata": {"version": "twin"}}, "fileReferences": None})
        await alice.wait_for(lambda: alice.count("task_end") > handled, 30, "the forged step handled")
        help_run = (await admin.ask("/help"))[-1].parent_id
        attempts = [
            (alice, forged, None),  # not an answer Baton gave
            (alice, alice.sent[-1], None),  # her own message
            (alice, str(uuid.uuid4()), None),  # nothing at all
            (admin, help_run, None),  # a command's reply
            (bob, run, None),  # alice's answer, by someone else
            (bob, run, alices_vote),  # ... naming her vote's id
        ]
        for chat, for_id, feedback_id in attempts:
            r = await vote(app, chat, for_id, 0, feedback_id)
            assert r.status_code == 404 and "your own conversations" in r.json()["detail"], (for_id, r.text)
        async with http_as(app, bob) as http:  # bob cannot take alice's vote back either
            r = await http.request("DELETE", "/feedback", json={"feedbackId": alices_vote})
        assert r.status_code == 404
        assert stored_votes(app) == before_rows, "no vote was stored, moved or deleted"
        assert await ck.metric(app.url, "baton_feedback_total", version="v1", value="down") == counted
        assert await ck.metric(app.url, "baton_feedback_total", version="twin", value="down") == 0
    finally:
        await bob.close()


# restart ---------------------------------------------------------------------------------------
async def test_a_restart_keeps_the_shadow(app, env, admin):
    assert "Shadow on: `twin`" in await admin.reply("/shadow twin 30")
    await admin.close()
    assert app.stop() == 0
    again = ck.launch_app(env, admin=ADMIN)
    try:
        chat = await ck.connect(again.url, *ADMIN)
        try:
            await ck.wait_until_healthy(again.url, 30)
            status = await chat.reply("/status")
            assert "**shadow:** `twin` (30% of requests copied)" in status, status
        finally:
            await chat.close()
    finally:
        again.stop()
