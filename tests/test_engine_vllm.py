"""The engine against real vLLM CPU backends serving tiny models built by the tests.

One engine (v1 on tiny-a, v2 on tiny-b) is shared by the module: each vLLM start-up costs about
a minute here. The tests run in file order; each leaves v1 active and v2 ready as standby.
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import BackendFailed, Engine, NotReady, RouteInfo, Sampling, TranslationRequest
from engine.states import State

from .conftest import ROOT, VLLM_FLAGS, vllm_settings
from .test_engine_fast import alive, stream_in_background, wait_for

pytestmark = pytest.mark.vllm

SAMPLING = Sampling(max_tokens=48, stop=())  # random-weight models: answers run to max_tokens


def group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


async def translate(eng: Engine, conv: str = "c", text: str = "Good morning", routed: list[float] | None = None):
    """One translation; `routed` gets the moment each attempt was routed."""
    pieces: list[str] = []

    async def on_token(t: str) -> None:
        pieces.append(t)

    async def on_route(_: RouteInfo) -> None:
        if routed is not None:
            routed.append(time.monotonic())

    r = await eng.translate(TranslationRequest(text, "French", conversation_id=conv), on_token, on_route=on_route)
    assert "".join(pieces) == r.text
    return r


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, tiny_models) -> Path:
    d = tmp_path_factory.mktemp("vllm-engine")
    (d / "models").symlink_to(tiny_models)
    return d


@pytest.fixture(scope="module")
async def eng(data_dir):
    e = Engine(vllm_settings(data_dir))
    await e.start()
    for name, model in (("v1", "tiny-a"), ("v2", "tiny-b")):
        await e.register(name, model, flags=VLLM_FLAGS, sampling=SAMPLING)
        await e.load(name)
    await asyncio.gather(e.wait_loaded("v1"), e.wait_loaded("v2"))
    await e.switch("v1")
    yield e
    await e.close()


async def test_backends_are_private_and_ready(eng):
    sockets = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout.splitlines()
    for name in ("v1", "v2"):
        b = eng.pool.get(name)
        assert b.state is State.READY
        pids = group_members(b.pid)
        ours = [line.split()[3] for line in sockets if any(f"pid={p}," in line for p in pids)]
        assert f"127.0.0.1:{b.port}" in ours
        assert all(addr.startswith("127.0.0.1:") for addr in ours), ours  # nothing on other interfaces
    assert eng.pool.get("v1").client.api_key != eng.pool.get("v2").client.api_key
    import httpx

    async with httpx.AsyncClient() as http:  # no key, no answer
        resp = await http.post(f"{eng.pool.get('v1').url}/v1/completions", json={"model": "v1", "prompt": "x"})
        assert resp.status_code == 401


async def test_switches_under_streaming_load(eng):
    stop = asyncio.Event()
    results, failures = [], []
    switches: list[tuple[float, float, str]] = []

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            routed: list[float] = []
            try:
                r = await translate(eng, conv=f"u{i}-{n}", text=f"Thank you {n}", routed=routed)
                results.append((routed[-1], r))
            except Exception as exc:  # noqa: BLE001 - every failure fails the test
                failures.append(repr(exc))

    clients = [asyncio.create_task(client(i)) for i in range(4)]
    await asyncio.sleep(1)
    target = "v2"
    for _ in range(20):
        called = time.monotonic()
        await eng.switch(target)
        switches.append((called, time.monotonic(), target))
        target = "v1" if target == "v2" else "v2"
        await asyncio.sleep(0.4)
    await eng.switch("v1") if eng.router.deployment.active != "v1" else None
    stop.set()
    await asyncio.gather(*clients)

    assert failures == []
    assert len(results) >= 20
    for _, r in results:
        assert r.finish_reason == "length" and r.completion_tokens == SAMPLING.max_tokens  # not truncated
        assert r.served_by == r.version  # vLLM itself says which model answered
    served = {r.version for _, r in results}
    assert served == {"v1", "v2"}
    after_switch = 0
    for (called, returned, version), nxt in zip(switches, switches[1:] + [(float("inf"), 0, "")]):
        # Routed, not started: detection and lookups come first, and the next switch may land in between.
        for routed_at, r in results:
            if returned < routed_at < nxt[0]:
                assert r.version == version
                after_switch += 1
    assert after_switch >= 5


async def test_switch_refusals_with_reasons(eng, data_dir):
    broken = data_dir / "models" / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    await eng.register("broken", broken, flags=VLLM_FLAGS)
    await eng.load("broken")
    await eng.register("v3", "tiny-a", flags=VLLM_FLAGS, sampling=SAMPLING)
    await eng.load("v3")
    before = (eng.router.deployment, await eng.store.get_deployment())

    with pytest.raises(NotReady, match="'v3' is (starting|warming)"):
        await eng.switch("v3")
    with pytest.raises(NotReady, match="'ghost' is not loaded"):
        await eng.switch("ghost")
    with pytest.raises(NotReady, match="'broken' failed to start: process exited unexpectedly"):
        await eng.wait_loaded("broken")
    with pytest.raises(NotReady, match=r"'broken' is failed: process exited unexpectedly \(exit code 1\)"):
        await eng.switch("broken")

    assert (eng.router.deployment, await eng.store.get_deployment()) == before
    assert (await translate(eng)).version == "v1"
    v3 = eng.pool.get("v3")
    await eng.unload("v3")  # unloading during start-up stops it
    assert v3.state is State.STOPPED and not group_members(v3.pid)
    await eng.unload("broken")


async def settled(eng: Engine) -> None:
    """Both versions ready, v1 active: what each test starts from, even after one that failed."""
    await wait_for(lambda: all(eng.pool.get(n).state is State.READY for n in ("v1", "v2")), 300, step=0.5)
    if eng.router.deployment.active != "v1":
        await eng.switch("v1")


async def test_killed_mid_answer_the_answer_comes_whole_from_the_standby(eng):
    await settled(eng)
    v1 = eng.pool.get("v1")
    pgid = v1.pid
    task, pieces, restarts = await stream_in_background(eng, text="Good morning")
    await wait_for(lambda: len(pieces) >= 1, 60)
    os.killpg(pgid, signal.SIGKILL)
    noticed = await wait_for(lambda: v1.state is not State.READY, 5)
    assert noticed < 3, "a crash is noticed within seconds, even on a loaded 2-core machine"
    r = await task
    assert [x.version for x in restarts] == ["v1"]
    assert (r.version, r.role, r.served_by) == ("v2", "standby", "v2")  # vLLM itself says who answered
    assert "".join(pieces) == r.text and r.completion_tokens == SAMPLING.max_tokens  # whole, one version
    assert "Version v1" in r.retranslated
    r = await translate(eng)
    assert (r.version, r.role) == ("v2", "standby") and "answered by standby v2" in r.failover_note
    await wait_for(lambda: not group_members(pgid), 5)  # vLLM's workers went with it
    await wait_for(lambda: v1.state is State.READY, 240, step=0.5)
    assert (await translate(eng)).version == "v1"
    audit = [(a.action, a.outcome) for a in await eng.audit(20)]
    assert ("crash", "failed") in audit and ("restart", "ok") in audit


async def test_frozen_backend_is_noticed_and_its_answer_comes_from_the_standby(eng):
    """SIGSTOP freezes the server with its port open: only the liveness probe's timeout (or the
    request's stall deadline) can notice it."""
    await settled(eng)
    v1 = eng.pool.get("v1")
    pgid = v1.pid
    task, pieces, restarts = await stream_in_background(eng, text="Good morning")
    await wait_for(lambda: len(pieces) >= 1, 60)
    os.killpg(pgid, signal.SIGSTOP)
    try:
        noticed = await wait_for(lambda: v1.state is not State.READY, 10)
        limit = eng.settings.liveness_interval_s + eng.settings.liveness_timeout_s
        assert noticed < limit + 1, f"a hang was noticed after {noticed:.1f} s"
        r = await task
        assert r.version == "v2" and [x.version for x in restarts] == ["v1"]
        assert "".join(pieces) == r.text and r.completion_tokens == SAMPLING.max_tokens
        await wait_for(lambda: not group_members(pgid), 10)  # the frozen processes were killed
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGCONT)
    await wait_for(lambda: v1.state is State.READY, 240, step=0.5)
    assert (await translate(eng)).version == "v1"
    audit = await eng.audit(20)
    assert any(a.action == "unhealthy" and "/health did not answer" in a.detail for a in audit)


async def test_vllm_states_its_context_and_refuses_an_oversized_prompt(eng):
    """What the engine takes from vLLM itself: `max_model_len` in /v1/models (checked against a
    version's --max-tokens at load) and a 400 for a prompt its context cannot hold."""
    await settled(eng)
    v1 = eng.pool.get("v1")
    import httpx

    async with httpx.AsyncClient(base_url=v1.url, headers={"Authorization": f"Bearer {v1.client.api_key}"}) as http:
        card = (await http.get("/v1/models")).json()["data"][0]
    assert (card["id"], card["max_model_len"]) == ("v1", 512)
    started = time.monotonic()
    with pytest.raises(BackendFailed, match="Version v1 refused the request: .*maximum context length") as err:
        await translate(eng, text="good morning to everyone " * 150)  # English: French is the target
    assert err.value.refused and time.monotonic() - started < 10
    assert v1.state is State.READY  # a refused request says nothing about the backend's health


async def test_unload_drains_a_stream_in_flight(eng):
    long = Sampling(max_tokens=400, stop=())
    await eng.register("long", "tiny-a", flags=VLLM_FLAGS, sampling=long)
    await eng.load("long")
    await eng.wait_loaded("long")
    await eng.switch("long")
    stream = asyncio.create_task(translate(eng))
    backend = eng.pool.get("long")
    await wait_for(lambda: backend.traffic.in_flight == 1, 30)
    await eng.switch("v1")  # the stream keeps its lease on "long"
    assert await eng.unload("long")
    r = stream.result()  # finished before its process was stopped
    assert r.version == "long" and r.completion_tokens == 400 and r.finish_reason == "length"
    assert backend.state is State.STOPPED and not group_members(backend.pid)


async def test_new_engine_on_same_database_serves_same_version(eng, data_dir):
    await settled(eng)
    await eng.switch("v2")
    await eng.close()
    again = Engine(vllm_settings(data_dir))
    dep = await again.start()
    try:
        assert (dep.active, dep.previous) == ("v2", "v1")
        # Both start again; until v2 is ready the standby v1 may answer (with a failover note).
        await again.wait_loaded("v2")
        r = await translate(again)
        assert (r.version, r.role, r.served_by) == ("v2", "active", "v2")
        await again.wait_loaded("v1")  # the standby came back too: /rollback works at once
    finally:
        await again.close()


OWNER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from pathlib import Path
from engine import Engine
from tests.conftest import VLLM_FLAGS, vllm_settings
async def main():
    eng = Engine(vllm_settings(Path({data!r})))
    await eng.start()
    await eng.register("v1", "tiny-a", flags=VLLM_FLAGS)
    await eng.load("v1")
    await eng.wait_loaded("v1")
    print(eng.pool.get("v1").pid, flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_sigkill_of_engine_owner_leaves_no_vllm_process(tmp_path, tiny_models):
    (tmp_path / "models").symlink_to(tiny_models)
    owner = subprocess.Popen([sys.executable, "-c", OWNER.format(root=str(ROOT), data=str(tmp_path))],
                             stdout=subprocess.PIPE, text=True)
    try:
        pgid = int(owner.stdout.readline())
        members = group_members(pgid)
        assert pgid in members and len(members) >= 2  # the API server and vLLM's engine core
    finally:
        owner.kill()
        owner.wait()
    deadline = time.monotonic() + 10
    while group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert group_members(pgid) == []
    assert not any(alive(p) for p in members)
