"""Two app replicas on one Postgres database, serving two remote versions: real vLLM servers this
test starts itself, outside Baton (as a Kubernetes deployment or another GPU host would run them).

A switch made through replica A must be applied by replica B within a second; clients streaming
through B while A switches must all get whole answers; B keeps serving when A is killed, and A
converges when it comes back; a chat written through A resumes through B.
"""
from __future__ import annotations

import asyncio
import statistics

import pytest
from openai import AsyncOpenAI

from . import chatkit as ck
from . import replicakit as rk
from .conftest import VLLM_PYTHON, require

pytestmark = pytest.mark.vllm
require(VLLM_PYTHON.exists(), f"no vLLM environment at {VLLM_PYTHON}: run `make install`")
PORTS = (31700, 31701)


@pytest.fixture(scope="module")
def cluster(tiny_models, postgres, tmp_path_factory):
    """Remote v1 and v2 (real vLLM), replicas A and B, and an admin key; v1 active."""
    root = tmp_path_factory.mktemp("replicas")
    key = "remote-" + rk.AUTH_SECRET[:16]
    remotes = [rk.start_remote(name, tiny_models / model, port, key, root, vllm=True)
               for name, model, port in (("v1", "tiny-a", PORTS[0]), ("v2", "tiny-b", PORTS[1]))]
    try:
        rk.wait_remotes(remotes, ck.VLLM_STARTUP_TIMEOUT_S)
        with rk.replicas(root, postgres.new_database(), remotes) as apps:
            yield root, remotes, apps
    finally:
        for r in remotes:
            r.kill()


@pytest.fixture(scope="module")
async def admin_key(cluster):
    _, remotes, apps = cluster
    return await rk.serving(apps, remotes, 120)


async def switch(api, name: str) -> int:
    r = await api.post("/deployment/switch", json={"name": name})
    assert r.status_code == 200, r.text
    return r.json()["generation"]


async def test_a_switch_through_a_is_applied_on_b_within_a_second(cluster, admin_key):
    _, _, (a, b) = cluster
    delays = []
    async with rk.admin_api(a, admin_key) as api:
        for i in range(10):
            target = ("v2", "v1")[i % 2]
            sent = asyncio.get_running_loop().time()
            generation = await switch(api, target)
            await rk.applied(b, generation)
            delays.append(asyncio.get_running_loop().time() - sent)
            _, body = await ck.healthz(b.url)
            assert body["active"] == target and body["replica"] == "b"
    assert max(delays) < 1.0, f"convergence took {max(delays):.3f} s at worst (median {statistics.median(delays):.3f})"


async def test_clients_streaming_through_b_during_20_switches_on_a_all_complete(cluster, admin_key):
    _, _, (a, b) = cluster
    done = asyncio.Event()
    answers: list[str] = []
    failures: list[BaseException] = []

    async def client() -> None:
        sdk = AsyncOpenAI(base_url=f"{b.url}/v1", api_key=admin_key, max_retries=0, timeout=120)
        async with sdk:
            while not done.is_set():
                try:
                    stream = await sdk.chat.completions.create(
                        model="baton", messages=[{"role": "user", "content": "Good morning"}], stream=True,
                        max_tokens=16)
                    finish, served = None, set()
                    async for chunk in stream:
                        served.add(chunk.model)
                        if chunk.choices and chunk.choices[0].finish_reason:
                            finish = chunk.choices[0].finish_reason
                    assert finish is not None, "the stream ended without a finish reason"
                    assert len(served) == 1, served  # one version per answer
                    answers.append(served.pop())
                except Exception as exc:  # noqa: BLE001 - counted: the test fails on any
                    failures.append(exc)

    async with rk.admin_api(a, admin_key) as api:
        clients = [asyncio.create_task(client()) for _ in range(3)]
        try:
            for i in range(20):
                await switch(api, ("v2", "v1")[i % 2])
                await asyncio.sleep(0.3)
        finally:
            done.set()
            await asyncio.gather(*clients)
    assert not failures, failures[:3]
    assert len(answers) >= 10, answers
    assert set(answers) == {"v1", "v2"}, set(answers)  # B followed the switches


async def test_a_chat_written_through_a_resumes_through_b(cluster, admin_key):
    _, _, (a, b) = cluster
    async with ck.chatting(a.url, *rk.ADMIN) as chat:
        asked = await chat.ask("Good morning", timeout=120)
        answer = asked[-1].output
        thread = chat.thread_id
    assert thread
    token = await ck.login(b.url, *rk.ADMIN)  # the same secret signs both replicas' logins
    again = ck.ChatClient(b.url, token, rk.ADMIN[0])
    await again.connect(thread)
    resumed = await again.wait_for(lambda: next((d for n, d in again.events if n == "resume_thread"), None), 15,
                                   "the resumed thread")
    await again.close()
    outputs = [s.get("output") for s in resumed["steps"]]
    assert "Good morning" in outputs and answer in outputs, outputs


async def test_b_serves_while_a_is_killed_and_a_converges_when_it_returns(cluster, admin_key):
    root, remotes, (a, b) = cluster
    a.proc.kill()
    a.proc.wait()
    sdk = AsyncOpenAI(base_url=f"{b.url}/v1", api_key=admin_key, max_retries=0, timeout=120)
    async with sdk, rk.admin_api(b, admin_key) as api:
        answer = await sdk.completions.create(model="baton", prompt="Good morning", max_tokens=8)
        assert answer.choices[0].finish_reason
        generation = await switch(api, "v2" if (await ck.healthz(b.url))[1]["active"] == "v1" else "v1")

        async def a_silent() -> bool:
            seen = (await api.get("/replicas")).json()
            return any(r["id"] == "a" and r["silent"] for r in seen)
        await ck.wait_until(a_silent, 10, "B's /replicas to show A silent")

        restarted = ck.launch_app(a.env, admin=rk.ADMIN, port=a.port)
        a.proc = restarted.proc
        await rk.applied(a, generation, timeout=30)  # from the database at start
        await rk.wait_states(a, {"v1": "ready", "v2": "ready"}, 120)
        then = await switch(api, "v1" if (await ck.healthz(b.url))[1]["active"] == "v2" else "v2")
        assert await rk.applied(a, then) < 1.0
        seen = {r["id"]: r for r in (await api.get("/replicas")).json()}
        assert seen["a"]["converged"] and not seen["a"]["silent"], seen
