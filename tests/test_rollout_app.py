"""/rollout through the real app (fake backends): admins are told of every decision in their chat,
OpenAI-SDK clients keep getting answers, the CLI waits for the outcome, and a rollout survives an
app that is killed in the middle of it."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import pytest
from openai import AsyncOpenAI

from tests import chatkit as ck

ADMIN = ("root", "root-password-1")
SECOND_ADMIN = ("erin", "erin-password-1")
USER = ("dave", "dave-password-1")
ENV = {"BATON_PORT_MIN": "29500", "BATON_PORT_MAX": "29999", "BATON_ROLLOUT_STEP_S": "2",
       "BATON_ROLLOUT_MIN_REQUESTS": "8", "BATON_ROLLOUT_STEP_MAX_S": "30",
       # A shared 2-core machine delays single answers by a few hundred ms; the slow candidate of
       # test_rollout_fast.py is judged with a margin above that noise.
       "BATON_ROLLOUT_TTFT_SLACK_MS": "400"}


class Clients:
    """OpenAI-SDK clients asking Baton's alias without a conversation: each request gets a random
    canary bucket, so a rollout's canary sees its share of them."""

    def __init__(self, app: ck.App, key: str) -> None:
        self.sdk = AsyncOpenAI(base_url=f"{app.url}/v1", api_key=key, max_retries=0)
        self.served: list[str] = []
        self.failed: list[str] = []

    async def loop(self) -> None:
        while True:
            try:
                r = await self.sdk.chat.completions.create(
                    model="baton", messages=[{"role": "user", "content": "Good morning"}])
                self.served.append(r.model)
            except Exception as exc:  # noqa: BLE001 - counted: the test asserts there are none
                self.failed.append(repr(exc))

    @contextlib.asynccontextmanager
    async def running(self, n: int = 3) -> AsyncIterator[Clients]:
        async with ck.background(*(self.loop() for _ in range(n))):
            yield self
        await self.sdk.close()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rollout-app")
    ck.make_fake_model(d, "v1")
    ck.make_fake_model(d, "v2")
    ck.make_fake_model(d, "flaky", error_rate=0.3)
    return d


@pytest.fixture(scope="module")
def app(data_dir):
    with ck.running_app({**ck.fake_env(data_dir), **ENV}, admin=ADMIN) as app:
        yield app


@pytest.fixture(scope="module")
async def people(app):
    admin = await ck.connect(app.url, *ADMIN)
    for name, password, role in (SECOND_ADMIN + ("admin",), USER + ("user",)):
        assert "Added" in await admin.reply(f"/users add {name} {password} {role}")
    for name in ("v1", "v2", "flaky"):
        await admin.reply(f"/load {name} {name}")
    for name in ("v1", "v2", "flaky"):
        await admin.wait_message(rf"`{name}` is ready", timeout=30)
    assert "Switched" in await admin.reply("/switch v1")
    key = await ck.make_key(admin, "sdk", "user")
    admin_key = await ck.make_key(admin, "pipeline", "admin")
    other = await ck.connect(app.url, *SECOND_ADMIN)
    user = await ck.connect(app.url, *USER)
    yield {"admin": admin, "other": other, "user": user, "key": key, "admin_key": admin_key}
    for chat in (admin, other, user):
        await chat.close()


def baton(app: ck.App, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BATON_URL": app.url, "BATON_API_KEY": key}
    return subprocess.run([sys.executable, "-m", "baton_cli", *args], env=env, capture_output=True, text=True,
                          timeout=120, cwd=ck.ROOT)


async def test_a_rollout_ramps_to_promote_and_every_admin_hears_each_decision(app, people):
    admin, other, user = people["admin"], people["other"], people["user"]
    marks = {c: len(c.order) for c in (admin, other, user)}
    async with Clients(app, people["key"]).running() as clients:
        reply = await admin.reply("/rollout v2 --steps 25,60,100")
        assert "**Rollout of `v2`** replacing `v1`" in reply and "**running**" in reply and "25 %" in reply
        for chat in (admin, other):  # both admins are told, each in their own chat
            await chat.wait_message(r"Rollout of `v2`: step 1 passed", timeout=30, after=marks[chat])
            await chat.wait_message(r"Rollout of `v2` passed every step and is promoted", timeout=30,
                                    after=marks[chat])
        translated = await user.ask("Good evening")
    assert clients.failed == [] and {"v1", "v2"} <= set(clients.served)
    assert user.find(r"Rollout of", after=marks[user]) is None  # users are not told
    assert translated[-1].attribution[0] == "v2"
    status = await admin.reply("/rollout status")
    assert "**passed**" in status and "| 1 | 25 % |" in status and "| 2 | 60 % |" in status
    assert "**Active:** `v2`" in await admin.reply("/status")


async def test_a_failing_candidate_through_the_cli_exits_7_and_traffic_moves_back(app, people):
    admin = people["admin"]
    assert "Switched" in await admin.reply("/switch v1")
    mark = len(admin.order)
    async with Clients(app, people["key"]).running() as clients:
        done = await asyncio.to_thread(baton, app, people["admin_key"], "rollout", "start", "flaky",
                                       "--steps", "30,100", "--wait")
    assert done.returncode == 7, done.stderr
    assert "aborted" in done.stderr and "error rate" in done.stderr
    assert clients.failed == []  # the canary's errors were answered again by v1
    await admin.wait_message(r"Rollout of `flaky` aborted at step 1", timeout=10, after=mark)
    shown = json.loads(baton(app, people["admin_key"], "status", "--json").stdout)
    assert (shown["deployment"]["active"], shown["deployment"]["canary"]) == ("v1", None)
    usage = baton(app, people["admin_key"], "rollout", "start", "v2", "--steps", "10,x")
    assert usage.returncode == 2 and "percents" in usage.stderr


async def test_a_rollout_survives_the_app_being_killed(app, people, data_dir):
    admin = people["admin"]
    reply = await admin.reply("/rollout v2 --steps 20,100 --step-s 3600")
    assert "**running**" in reply
    for chat in people.values():
        if isinstance(chat, ck.ChatClient):
            await chat.close()
    app.proc.kill()  # no shutdown hook: what a crash or an OOM kill leaves
    app.proc.wait()
    again = ck.launch_app({**ck.fake_env(data_dir), **ENV}, admin=ADMIN, port=app.port)
    try:
        await ck.wait_until_healthy(again.url, 30)
        admin = await ck.connect(again.url, *ADMIN)
        status = await admin.reply("/rollout status")
        assert "**running**" in status and "Step 1 of 2: 20 % of conversations" in status
        status = await admin.reply("/status")
        assert "canary:** `v2` (20% of conversations)" in status and "**Rollout:** `v2` is at step 1 of 2" in status
        assert "rollout-resume" in await admin.reply("/audit 5")
        aborted = await admin.reply("/rollout abort")
        assert "**aborted**" in aborted and "aborted by root" in aborted
        assert "canary" not in (await admin.reply("/status")).split("\n")[0]
        await admin.close()
    finally:
        with contextlib.suppress(Exception):
            again.stop()
        app.proc = again.proc  # the module fixture stops whichever app runs last
