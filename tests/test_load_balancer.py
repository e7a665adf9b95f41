"""The chat and the API behind nginx: two app replicas (on the fake vLLM server) behind the shipped
docs/deploy/nginx.conf, driven through nginx's port only, the way users reach a deployment.

The replicas share CHAINLIT_AUTH_SECRET and the admin account; each serves a version named after
it (lb-a, lb-b), so an answer's attribution tells which replica served it. `replica_envs` is what
differs from one deployment to the next: here each replica has its own SQLite, so the API key made
on one is copied to the other; on a shared database (BATON_DATABASE_URL) that copy has nothing to do.

The tests share the replicas and run in file order: the last one kills a replica.
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import pytest
from openai import AsyncOpenAI

from tests import chatkit as ck
from tests import nginxkit
from tests.conftest import require

ADMIN = ("root", "root-password-1")
VERSIONS = ("lb-a", "lb-b")
TRANSPORTS = ("polling", "websocket")  # what Chainlit's browser client uses: polls, then upgrades
TOKEN_DELAY_S = 0.1  # 7 tokens: an answer streams for most of a second

require(os.path.exists(nginxkit.NGINX), f"nginx is not installed ({nginxkit.NGINX}; `make install-nginx`)")


@pytest.fixture(scope="module")
def replica_envs(tmp_path_factory) -> list[dict[str, str]]:
    envs = []
    secret = "lb-test-secret-" + "x" * 40
    for i, name in enumerate(VERSIONS):
        d = tmp_path_factory.mktemp(f"baton-{name}")
        ck.make_fake_model(d, name, token_delay_s=TOKEN_DELAY_S)
        envs.append({**ck.fake_env(d), "CHAINLIT_AUTH_SECRET": secret,
                     "BATON_PORT_MIN": str(31400 + 100 * i), "BATON_PORT_MAX": str(31499 + 100 * i)})
    return envs


@pytest.fixture(scope="module")
def cluster(replica_envs, tmp_path_factory):
    with nginxkit.balanced(replica_envs, tmp_path_factory.mktemp("nginx"), admin=ADMIN) as cluster:
        yield cluster


@pytest.fixture(scope="module")
async def api_key(cluster) -> str:
    """Each replica (reached directly, not through nginx) loads its version and makes it active;
    one API key works on both."""
    key = ""
    for app, name in zip(cluster.apps, VERSIONS, strict=True):
        async with ck.chatting(app.url, *ADMIN) as admin:
            mark = len(admin.order)
            assert f"Loading `{name}`" in await admin.reply(f"/load {name} {name}")
            await admin.wait_message(f"`{name}` is ready", after=mark)
            assert f"Switched: `{name}` now answers" in await admin.reply(f"/switch {name}")
            if not key:
                key = await ck.make_key(admin, "lb", "user")
    if "BATON_DATABASE_URL" not in cluster.apps[0].env:
        share_credentials(*(Path(app.env["BATON_DATA_DIR"]) / "baton.db" for app in cluster.apps))
    return key


def share_credentials(source: Path, *targets: Path) -> None:
    """What a shared database gives for free: the same api_keys and accounts rows on every replica's
    SQLite (a login names its account as created: a replica's own `root` would be another person)."""
    for table in ("api_keys", "accounts"):
        with sqlite3.connect(source) as db:
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            rows = db.execute(f"SELECT {', '.join(cols)} FROM {table}").fetchall()
        for target in targets:
            with sqlite3.connect(target) as db:
                db.executemany(f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) "
                               f"VALUES ({', '.join('?' * len(cols))})", rows)


def version_of(msg: ck.Msg) -> str:
    assert msg.attribution, msg.output
    return msg.attribution[0]


async def streamed_answer(chat: ck.ChatClient, text: str) -> ck.Msg:
    msgs = await chat.ask(text)
    assert msgs, f"no answer to {text!r}"
    answer = msgs[-1]
    body = answer.output.split("\n\n", 1)[0]
    assert answer.streamed and len(answer.tokens) >= 5, "the answer came token by token"
    assert "".join(answer.tokens) == body and body.startswith(f"{version_of(answer)} says:"), answer.output
    return answer


def app_serving(cluster: nginxkit.Balanced, version: str) -> ck.App:
    return cluster.apps[VERSIONS.index(version)]


# ------------------------------------------------------------------------------------
async def test_a_user_chats_through_nginx_and_stays_on_one_replica(cluster, api_key):
    nginx = cluster.nginx
    token = await ck.login(nginx.url, *ADMIN)
    first = ck.ChatClient(nginx.url, token, ADMIN[0])
    await first.connect(transports=TRANSPORTS)
    try:
        answer = await streamed_answer(first, "Good morning to everybody")
        home = version_of(answer)
        # A file upload names the chat session over HTTP: it must reach the replica holding it.
        await first.upload("note.txt", b"hello", "text/plain")

        # A second tab of the same browser (same login cookie, new session) lands on the same replica.
        second = ck.ChatClient(nginx.url, token, ADMIN[0])
        await second.connect(transports=TRANSPORTS)
        try:
            assert version_of(await streamed_answer(second, "Good evening to everybody")) == home
            assert version_of(await streamed_answer(first, "And good night")) == home
        finally:
            await second.close()
    finally:
        await first.close()

    # The clients did poll before upgrading, and nginx kept every socket.io request on one replica.
    socket_io = [r for r in nginx.requests() if r.path.startswith("/ws/socket.io")]
    assert {r.transport for r in socket_io} == {"polling", "websocket"}, socket_io
    assert {r.upstream for r in socket_io} == {f"127.0.0.1:{app_serving(cluster, home).port}"}, socket_io
    assert all(r.status in (101, 200) for r in socket_io), socket_io


async def test_openai_clients_stream_through_nginx_from_both_replicas(cluster, api_key):
    client = AsyncOpenAI(base_url=f"{cluster.nginx.url}/v1", api_key=api_key, max_retries=0)
    served = set()
    for i in range(4):
        arrivals: list[float] = []
        text, finish = "", None
        stream = await client.chat.completions.create(
            model="baton", messages=[{"role": "user", "content": f"request number {i} please"}], stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                text += chunk.choices[0].delta.content
                arrivals.append(time.monotonic())
            if chunk.choices and chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        assert finish == "stop" and text.endswith("please"), text
        served.add(text.split(" says:", 1)[0])
        # Streamed: the events arrive as the backend makes them, not all at once at the end.
        assert len(arrivals) >= 5 and arrivals[-1] - arrivals[0] > 3 * TOKEN_DELAY_S, arrivals
    # Without a login cookie there is nothing to stick to: requests are spread over the replicas.
    assert served == set(VERSIONS), served


async def test_when_a_replica_dies_the_user_is_served_by_the_other(cluster, api_key):
    nginx = cluster.nginx
    token = await ck.login(nginx.url, *ADMIN)
    chat = ck.ChatClient(nginx.url, token, ADMIN[0])
    await chat.connect(transports=TRANSPORTS)
    home = version_of(await streamed_answer(chat, "Before the crash"))
    (other,) = set(VERSIONS) - {home}

    app_serving(cluster, home).proc.kill()  # SIGKILL: no goodbye to nginx or the client
    await ck.wait_until(lambda: not chat.sio.connected, 10, "the socket to drop with its replica")
    await chat.sio.disconnect()

    # The same login (signed with the shared secret) opens a new chat on the other replica.
    again = ck.ChatClient(nginx.url, token, ADMIN[0])
    await again.connect(transports=TRANSPORTS)
    try:
        assert version_of(await streamed_answer(again, "After the crash")) == other
    finally:
        await again.close()
    # New logins (POSTs, retried on the other replica only because the dead one refused the
    # connection) and the API keep working.
    for _ in range(3):
        assert await ck.login_status(nginx.url, *ADMIN) == 200
    client = AsyncOpenAI(base_url=f"{nginx.url}/v1", api_key=api_key, max_retries=0)
    for _ in range(3):
        done = await client.chat.completions.create(model="baton", messages=[{"role": "user", "content": "still here"}])
        assert done.choices[0].message.content.startswith(f"{other} says:"), done
