"""The chat end to end on real vLLM: the same app and client as test_chat_fast.py, with
BATON_VLLM_PYTHON=.venv-vllm/bin/python and the default server module. Tiny random-weight
models (tests/conftest.py `tiny_models`) make each start-up about a minute on CPU.
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from tests import chatkit as ck

from .conftest import VLLM_FLAGS

pytestmark = pytest.mark.vllm

ADMIN = ("root", "root-password-1")
USER = ("dave", "dave-password-1")
START = 400  # seconds a vLLM start-up may take on a busy 2-core machine
FLAGS = " ".join(VLLM_FLAGS)


@pytest.fixture(scope="module")
def env(tmp_path_factory, tiny_models) -> dict[str, str]:
    d = tmp_path_factory.mktemp("vllm-chat")
    (d / "models").symlink_to(tiny_models)
    return {**ck.vllm_env(d), "BATON_PORT_MIN": "24000", "BATON_PORT_MAX": "24999"}


def body(msg: ck.Msg) -> str:
    return msg.output.rsplit("\n\n_Translated by", 1)[0]


async def test_load_switch_translate_and_restart_on_real_vllm(env):
    app = ck.launch_app(env, admin=ADMIN)
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

        first = (await user.ask("Good morning", timeout=120))[-1]
        assert first.attribution == ("v1", "active"), first.output
        assert 0 < len(first.tokens) <= 24, "a random-weight model runs to the cap, never past it"

        # Load v2 while the user keeps translating on v1, then switch mid-stream.
        answers: list[ck.Msg] = []
        stop = asyncio.Event()

        async def user_loop() -> None:
            while not stop.is_set():
                answers.extend(await user.ask("Where is the station?", timeout=120))

        loop = asyncio.create_task(user_loop())
        try:
            mark = len(admin.order)
            started = time.monotonic()
            assert "Loading `v2`" in await admin.reply(f"/load v2 tiny-b {FLAGS}")
            assert time.monotonic() - started < 10, "/load returns at once"
            await admin.wait_message(r"`v2` is ready", timeout=START, after=mark)
            assert "Switched: `v2`" in await admin.reply("/switch v2")
            await user.wait_for(lambda: any(a.attribution and a.attribution[0] == "v2" for a in answers), 120, "a v2 answer")
        finally:
            stop.set()
            await loop
        for a in answers:
            assert a.attribution and a.attribution[0] in ("v1", "v2"), a.output
            assert "".join(a.tokens) == body(a) or not a.streamed
        assert {a.attribution[0] for a in answers} == {"v1", "v2"}

        status = await admin.reply("/status")
        pids = [int(c.strip()) for line in status.splitlines() if line.startswith("| v")
                for c in [line.split("|")[5]] if c.strip().isdigit()]
        token, thread_id = user.token, user.thread_id
        await admin.close()
        await user.close()
    finally:
        app.stop(timeout=60)
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}"), "no vLLM process outlives the app"

    again = ck.launch_app(env, admin=ADMIN)
    try:
        deadline = time.monotonic() + START
        while (health := await ck.healthz(again.url))[0] != 200 and time.monotonic() < deadline:
            await asyncio.sleep(2)
        assert health[1]["active"] == "v2" and health[1]["status"] == "ok", health
        client = ck.ChatClient(again.url, token, USER[0])
        await client.connect(thread_id)
        resumed = await client.wait_for(lambda: next((d for n, d in client.events if n == "resume_thread"), None),
                                        10, "the resumed thread")
        assert sum("_Translated by" in s.get("output", "") for s in resumed["steps"]) >= len(answers)
        after = (await client.ask("Good night", timeout=120))[-1]
        assert after.attribution == ("v2", "active"), after.output
        await client.close()
    finally:
        again.stop(timeout=60)
