"""The chat end to end on real vLLM: the same app and client as test_chat_fast.py, with
BATON_VLLM_PYTHON=.venv-vllm/bin/python and the default server module. Tiny random-weight
models (tests/conftest.py `tiny_models`) make each start-up about a minute on CPU.

One scenario, three vLLM start-ups (v1, v2, v2 again after the app restart); everything else
reuses the versions already loaded: switch while translating, rollback, canary, promote, the
OpenAI-compatible gateway with the official SDK while the admin API switches, Stop, restart.
"""
from __future__ import annotations

import asyncio
import os
import time

import httpx
import openai
import pytest
from openai import AsyncOpenAI

from engine.router import canary_bucket
from tests import chatkit as ck

from .conftest import VLLM_FLAGS, VLLM_PYTHON, require

pytestmark = pytest.mark.vllm

ADMIN = ("root", "root-password-1")
USER = ("dave", "dave-password-1")
FLAGS = " ".join(VLLM_FLAGS)
CANARY = 50

# Time budget, in seconds. The engine gives a start-up STARTUP_S before it stops the process and
# reports the load failed; the test waits a little longer for that report.
STARTUP_S = ck.VLLM_STARTUP_TIMEOUT_S
START = STARTUP_S + 30
STARTS = 3            # v1, v2, and v2 again after the restart
BUILD = 180           # tests/conftest.py tiny_models: two tiny models built with the vLLM venv (once per session)
APP = 2 * (60 + 60)   # two app launches (launch_app) and two stops (App.stop)
ANSWER = 120          # the longest wait for one answer
ANSWERS = 420         # all the answers of the scenario together (about a dozen in the chat, three dozen through the SDK)
BUDGET = BUILD + STARTS * START + APP + ANSWERS


@pytest.fixture(scope="session")
def vllm_venv() -> None:
    require(VLLM_PYTHON.exists(), f"no vLLM interpreter at {VLLM_PYTHON}: make install-vllm")


@pytest.fixture(scope="module")
def env(vllm_venv, tmp_path_factory, tiny_models) -> dict[str, str]:
    d = tmp_path_factory.mktemp("vllm-chat")
    (d / "models").symlink_to(tiny_models)
    return {**ck.vllm_env(d), "BATON_PORT_MIN": "24000", "BATON_PORT_MAX": "24999"}


def side(client: ck.ChatClient) -> tuple[str, str]:
    """Who should answer this conversation while v2 is a CANARY % canary beside v1."""
    assert client.thread_id
    return ("v2", "canary") if canary_bucket(client.thread_id) < CANARY else ("v1", "active")


@pytest.mark.timeout(BUDGET)
async def test_load_switch_translate_and_restart_on_real_vllm(env):
    app = ck.launch_app(env, admin=ADMIN)
    others: list[ck.ChatClient] = []
    try:
        admin = await ck.connect(app.url, *ADMIN)
        assert "Added `dave`" in await admin.reply(f"/users add {USER[0]} {USER[1]}")
        user = await ck.connect(app.url, *USER)

        mark = len(admin.order)
        # v1 caps its answers; v2 keeps the default (up to what its 512-token context leaves).
        assert "Loading `v1`" in await admin.reply(f"/load v1 tiny-a {FLAGS} --max-tokens 24")
        await admin.wait_message(r"`v1` is ready", timeout=START, after=mark)
        step = next(m for m in admin.messages.values() if m.type == "tool" and m.name == "Loading v1")
        updates = [d["output"] for n, d in admin.events if n == "update_message" and d.get("id") == step.id]
        assert any("pid" in o and "last log line" in o for o in updates), "the live step showed vLLM's log"
        assert "Switched: `v1`" in await admin.reply("/switch v1")

        first = (await user.ask("Good morning", timeout=ANSWER))[-1]
        assert first.attribution == ("v1", "active"), first.output
        assert 0 < len(first.tokens) <= 24, "a random-weight model runs to the cap, never past it"

        # Load v2 while the user keeps translating on v1, then switch while the user translates.
        answers: list[ck.Msg] = []
        stop = asyncio.Event()

        async def user_loop() -> None:
            while not stop.is_set():
                answers.extend(await user.ask("Where is the station?", timeout=ANSWER))

        loop = asyncio.create_task(user_loop())
        try:
            mark = len(admin.order)
            started = time.monotonic()
            assert "Loading `v2`" in await admin.reply(f"/load v2 tiny-b {FLAGS}")
            assert time.monotonic() - started < 10, "/load returns at once"
            await admin.wait_message(r"`v2` is ready", timeout=START, after=mark)
            assert "Switched: `v2`" in await admin.reply("/switch v2")
            await user.wait_for(lambda: any(a.attribution and a.attribution[0] == "v2" for a in answers), ANSWER, "a v2 answer")
        finally:
            stop.set()
            await loop
        for a in answers:
            assert a.attribution and a.attribution[0] in ("v1", "v2"), a.output
            assert "".join(a.tokens) == a.translation, "what streamed is what the answer kept"
        assert {a.attribution[0] for a in answers} == {"v1", "v2"}

        # Rollback, canary and promote move real traffic between the two loaded versions.
        assert "Rolled back: `v1`" in await admin.reply("/rollback")
        assert (await user.ask("Thank you", timeout=ANSWER))[-1].attribution == ("v1", "active")
        reply = await admin.reply(f"/canary v2 {CANARY}")
        assert f"Canary on: `v2` answers {CANARY}% of conversations, `v1` the rest." in reply, reply
        answer = (await user.ask("Thank you", timeout=ANSWER))[-1]
        assert answer.attribution == side(user), (side(user), answer.output)
        # New conversations until both sides of the split have answered (each lands on either with p = 1/2).
        sides = {side(user)}
        for i in range(12):
            if len(sides) == 2:
                break
            other = await ck.connect(app.url, *USER)
            others.append(other)
            answer = (await other.ask(f"Good evening {i}", timeout=ANSWER))[-1]
            # Chainlit names the thread from a task of its own, which a busy machine may run late.
            await other.wait_for(lambda o=other: o.thread_id, 30, "the new thread's id")
            assert answer.attribution == side(other), (side(other), answer.output)
            sides.add(side(other))
        assert sides == {("v1", "active"), ("v2", "canary")}
        assert "Promoted: `v2`" in await admin.reply("/promote")
        for client in (user, *others):
            assert (await client.ask("Good night", timeout=ANSWER))[-1].attribution == ("v2", "active")

        await gateway_on_real_vllm(app, admin)

        # Stop keeps the partial translation (v2 is uncapped: a random-weight answer runs for hundreds of tokens).
        mark = len(user.order)
        await user.send("Can you help me?")
        streaming = await user.wait_for(
            lambda: next((user.messages[i] for i in user.order[mark:]
                          if user.messages[i].streamed and len(user.messages[i].tokens) >= 3), None), ANSWER, "a few tokens")
        await user.stop()
        await user.wait_for(lambda: streaming.final, 30, "the stopped answer to be completed")
        await user.wait_for(lambda: not user.busy, 30, "the stopped task to end")
        partial, sep, tail = streaming.output.partition("\n\n_Stopped: ")
        assert sep and tail.startswith("the partial translation above (from `v2`) is kept."), streaming.output[-300:]
        assert partial == "".join(streaming.tokens) and partial, "the text that streamed is kept, whole"

        status = await admin.reply("/status")
        pids = [int(c.strip()) for line in status.splitlines() if line.startswith("| v")
                for c in [line.split("|")[5]] if c.strip().isdigit()]
        assert len(pids) == 2, status
        token, thread_id = user.token, user.thread_id
        for client in (admin, user, *others):
            await client.close()
    finally:
        app.stop(timeout=60)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), "no vLLM process outlives the app"

    again = ck.launch_app(env, admin=ADMIN)
    try:
        async def serving() -> dict | None:
            # Both versions come back; the standby may be ready first (200, "degraded"): wait for v2.
            code, health = await ck.healthz(again.url)
            return health if code == 200 and health["status"] == "ok" else None
        health = await ck.wait_until(serving, START, "the active version to serve again after the restart",
                                     interval=1, detail=lambda: ck.healthz(again.url))
        assert health["active"] == "v2" and health["status"] == "ok", health
        client = ck.ChatClient(again.url, token, USER[0])
        await client.connect(thread_id)
        resumed = await client.wait_for(lambda: next((d for n, d in client.events if n == "resume_thread"), None),
                                        10, "the resumed thread")
        assert sum("_Translated by" in s.get("output", "") for s in resumed["steps"]) >= len(answers)
        after = (await client.ask("Good night", timeout=ANSWER))[-1]
        assert after.attribution == ("v2", "active"), after.output
        await client.close()
    finally:
        again.stop(timeout=60)


async def gateway_on_real_vllm(app: ck.App, admin: ck.ChatClient) -> None:
    """The official SDK through /v1 while the admin API switches between the two real versions:
    every stream completes, whole, from one version, and `model` names it. Keys that may not are
    refused. Leaves v2 active, as it found it."""
    secrets = {name: await ck.make_key(admin, name, role)
               for name, role in (("pipeline", "admin"), ("webui", "user"), ("old", "user"))}
    client = AsyncOpenAI(base_url=f"{app.url}/v1", api_key=secrets["webui"], max_retries=0, timeout=ANSWER)
    control = httpx.AsyncClient(base_url=f"{app.url}/admin/v1", timeout=ANSWER,
                                headers={"Authorization": f"Bearer {secrets['pipeline']}"})
    try:
        raw = await client.completions.with_raw_response.create(model="baton", prompt="Good morning", max_tokens=8)
        whole = raw.parse()
        assert whole.model == raw.headers["X-Baton-Version"] == "v2" and whole.choices[0].finish_reason in ("length", "stop")
        chat = await client.chat.completions.create(
            model="baton", messages=[{"role": "user", "content": "Thank you"}], max_tokens=6, stream=True)
        parts = [c async for c in chat]
        assert {c.model for c in parts} == {"v2"} and parts[-1].choices[0].finish_reason in ("length", "stop")

        # vLLM's own sampling extensions pass through: ignore_eos goes on to max_tokens (issue 21: 9 of 32 before).
        eos = await client.completions.create(model="baton", prompt="Good morning", max_tokens=32, temperature=0,
                                              extra_body={"ignore_eos": True, "top_k": 1})
        assert eos.usage is not None and eos.usage.completion_tokens == 32, eos.usage
        assert eos.choices[0].finish_reason == "length"

        async def streamed(i: int) -> tuple[set[str], str | None, int]:
            stream = await client.completions.create(model="baton", prompt=f"Good evening {i}", max_tokens=16,
                                                     stream=True, user=f"client-{i}")
            models, finish, n = set(), None, 0
            async for chunk in stream:
                models.add(chunk.model)
                for c in chunk.choices:
                    n += bool(c.text)
                    finish = c.finish_reason or finish
            return models, finish, n

        stop = asyncio.Event()
        results: list[tuple[set[str], str | None, int]] = []

        async def user(i: int) -> None:
            while not stop.is_set():
                results.append(await streamed(i))

        users = [asyncio.create_task(user(i)) for i in range(4)]
        try:
            for target in ("v1", "v2", "v1", "v2"):
                await asyncio.sleep(1.5)
                r = await control.post("/deployment/switch", json={"name": target})
                assert r.status_code == 200 and r.json()["active"] == target, r.text
        finally:
            stop.set()
            await asyncio.gather(*users)
        assert len(results) >= 8, results
        for models, finish, n in results:
            assert len(models) == 1 and models <= {"v1", "v2"}, models
            assert finish in ("length", "stop")  # complete: to its cap or its end
        assert {m for models, _, _ in results for m in models} == {"v1", "v2"}

        # Refused: no key, a user key on the admin API, a revoked key.
        async with httpx.AsyncClient(base_url=app.url) as anonymous:
            assert (await anonymous.get("/v1/models")).status_code == 401
        user_control = await control.post("/deployment/rollback", headers={"Authorization": f"Bearer {secrets['webui']}"})
        assert user_control.status_code == 403, user_control.text
        assert (await control.delete("/keys/old")).status_code == 200
        with pytest.raises(openai.AuthenticationError):
            await AsyncOpenAI(base_url=f"{app.url}/v1", api_key=secrets["old"], max_retries=0).models.list()
        assert (await control.get("/deployment")).json()["active"] == "v2"
    finally:
        await control.aclose()
        await client.close()
