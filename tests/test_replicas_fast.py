"""Two app replicas on one Postgres database behind nginx (docs/deploy/nginx.conf), on the fast fake
server as the remote versions: admins acting at once on both replicas, a lost LISTEN connection,
/status's replica table, an unload that only stops routing, and a user's replica killed under
them, and a rollout whose replica hangs. (tests/test_replicas_vllm.py does the rest on real vLLM.)"""
from __future__ import annotations

import asyncio
import os
import signal
import uuid

import asyncpg
import pytest
from openai import AsyncOpenAI

from engine.replicas import asyncpg_dsn

from . import chatkit as ck
from . import nginxkit
from . import replicakit as rk

PORTS = (31800, 31801)


@pytest.fixture(scope="module")
def cluster(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("replicas-fast")
    remotes = [rk.start_remote(name, ck.make_fake_model(root, name, token_delay_s=0.02), port, "fake-remote-key",
                               root, vllm=False)
               for name, port in (("v1", PORTS[0]), ("v2", PORTS[1]))]
    db = postgres.new_database()
    # Rollout steps judged after 1 s on 5 canary answers, first tokens compared loosely (a busy box).
    # A gives up on a step without traffic after 5 s, B after a minute: A hangs longer than that in
    # the rollout test, so A coming back would abort the rollout if it still thought it drove it.
    rollouts = {"BATON_ROLLOUT_STEP_S": "1", "BATON_ROLLOUT_MIN_REQUESTS": "5", "BATON_ROLLOUT_TTFT_SLACK_MS": "2000"}
    envs = [rk.replica_env(root / rid, db, rid, remotes, **rollouts, BATON_ROLLOUT_STEP_MAX_S=give_up)
            for rid, give_up in (("a", "5"), ("b", "60"))]
    try:
        rk.wait_remotes(remotes, 30)
        with nginxkit.balanced(envs, root / "nginx", admin=rk.ADMIN) as lb:
            yield db, remotes, lb.apps, lb
    finally:
        for r in remotes:
            r.kill()


@pytest.fixture(scope="module")
async def admin_key(cluster):
    _, remotes, apps, _ = cluster
    return await rk.serving(apps, remotes, 30)


async def both(apps: list[ck.App]) -> list[dict]:
    return [(await ck.healthz(app.url))[1] for app in apps]


async def test_two_admins_switching_at_once_on_two_replicas_one_wins_and_both_agree(cluster, admin_key):
    _, _, apps, _ = cluster
    async with rk.admin_api(apps[0], admin_key) as on_a, rk.admin_api(apps[1], admin_key) as on_b:
        for round_ in range(6):
            active = (await both(apps))[0]["active"]
            target = "v2" if active == "v1" else "v1"
            ra, rb = await asyncio.gather(on_a.post("/deployment/switch", json={"name": target}),
                                          on_b.post("/deployment/switch", json={"name": target}))
            codes = sorted((ra.status_code, rb.status_code))
            assert codes == [200, 409], (round_, ra.text, rb.text)
            refused = ra if ra.status_code == 409 else rb
            assert ("another replica" in refused.text or "already active" in refused.text), refused.text
            winner = (ra if ra.status_code == 200 else rb).json()["generation"]
            for app in apps:
                await rk.applied(app, winner, timeout=1.0)
            a, b = await both(apps)
            assert a["active"] == b["active"] == target and a["generation"] == b["generation"] == winner


async def test_a_replica_whose_listen_connection_drops_catches_up_after_reconnecting(cluster, admin_key):
    db, _, (a, b), _ = cluster
    conn = await asyncpg.connect(asyncpg_dsn(db))
    try:
        dropped = await conn.fetchval("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                      "WHERE application_name LIKE 'baton-listen %'")
    finally:
        await conn.close()
    assert dropped == 2, dropped  # one per replica
    async with rk.admin_api(a, admin_key) as api:
        active = (await ck.healthz(a.url))[1]["active"]
        r = await api.post("/deployment/switch", json={"name": "v2" if active == "v1" else "v1"})
        assert r.status_code == 200, r.text
        # Sent while B was not listening: B applies it after it reconnects (well before the poll).
        assert await rk.applied(b, r.json()["generation"], timeout=3.0) < 3.0


async def test_status_shows_every_replica_with_its_generation_and_heartbeat(cluster, admin_key):
    _, _, (a, b), _ = cluster
    async with ck.chatting(b.url, *rk.ADMIN) as chat:
        text = await chat.reply("/status")
    generation = (await ck.healthz(a.url))[1]["generation"]
    assert f"deployment generation {generation}" in text, text
    assert "| b (this one) |" in text and "| a |" in text, text
    assert text.count("✅ converged") == 2, text


async def test_unloading_a_remote_version_on_a_stops_routing_on_b_and_kills_nothing(cluster, admin_key):
    _, remotes, (a, b), _ = cluster
    async with rk.admin_api(a, admin_key) as api:
        active = (await ck.healthz(a.url))[1]["active"]
        idle = "v2" if active == "v1" else "v1"
        r = await api.delete(f"/versions/{idle}")
        assert r.status_code == 200, r.text

    async def gone() -> bool:
        return idle not in (await ck.healthz(b.url))[1]["versions"]
    await ck.wait_until(gone, 5, f"B to stop serving {idle}")
    remote = next(r for r in remotes if r.name == idle)
    assert remote.proc.poll() is None and remote.alive()  # nothing remote was killed
    async with rk.admin_api(a, admin_key) as api:
        await rk.load_remote(api, remote)  # and it can be loaded again
        await rk.wait_states(b, {idle: "ready"}, 30)


async def test_a_rollout_whose_replica_hangs_is_taken_over_and_the_hung_one_lets_go(cluster, admin_key):
    _, _, (a, b), _ = cluster
    baseline = (await both([a]))[0]["active"]
    candidate = "v2" if baseline == "v1" else "v1"
    async with rk.admin_api(a, admin_key) as on_a, rk.admin_api(b, admin_key) as on_b:
        r = await on_a.post("/rollout", json={"name": candidate, "steps": [20, 50, 100]})
        assert r.status_code == 202 and r.json()["runner"] == "a", r.text

        async def followed() -> dict | None:
            view = (await on_b.get("/rollout")).json()
            return view if view.get("state") == "running" else None
        on_b_view = await ck.wait_until(followed, 3, "B to follow the rollout's start")
        # B does not judge it: the step's numbers are A's, and B says so rather than show its own.
        assert on_b_view["runner"] == "a" and on_b_view["canary"] is None, on_b_view
        assert "Replica a judges each step" in on_b_view["next_decision"], on_b_view
        os.kill(a.proc.pid, signal.SIGSTOP)  # A hangs with its runner
        hung = asyncio.get_running_loop().time()
        try:
            async def claimed() -> dict | None:
                view = (await on_b.get("/rollout")).json()
                return view if view["runner"] == "b" else None
            view = await ck.wait_until(claimed, 15, "B to take the rollout over from the silent A")
            assert view["state"] == "running" and view["percent"] == 20 and view["canary"] is not None, view
            # A stays hung past its own limit for a step without traffic (5 s): a runner that did not
            # know it had lost the rollout would abort it the moment it wakes.
            await asyncio.sleep(max(0.0, hung + 7 - asyncio.get_running_loop().time()))
        finally:
            os.kill(a.proc.pid, signal.SIGCONT)
        await asyncio.sleep(2)  # A wakes, follows, and its runner lets go
        assert (await on_b.get("/rollout")).json()["state"] == "running"
        answers: list[str] = []
        sdk = AsyncOpenAI(base_url=f"{b.url}/v1", api_key=admin_key, max_retries=0, timeout=30)

        async def user() -> None:
            while True:  # each request its own conversation, so the canary gets its share
                done = await sdk.chat.completions.create(model="baton", user=uuid.uuid4().hex,
                                                         messages=[{"role": "user", "content": "Good morning"}])
                answers.append(done.model)

        async def ended() -> dict | None:
            view = (await on_b.get("/rollout")).json()
            return view if view["state"] != "running" else None
        async with sdk, ck.background(*(user() for _ in range(4))):
            view = await ck.wait_until(ended, 60, "B to drive the rollout to its end")
        assert view["state"] == "passed", view
        assert candidate in answers and baseline in answers, set(answers)
        for app in (a, b):  # A follows the promote it did not make
            await rk.wait_states(app, {candidate: "ready"}, 5)
            await ck.wait_until(lambda app=app: _active(app, candidate), 5, f"{app.url} to serve {candidate}")
        audit = (await on_b.get("/audit", params={"n": 50})).json()
        since = audit[:next(i for i, e in enumerate(audit) if e["action"] == "rollout-start")]
        done_by_runner = [(e["action"], e["outcome"]) for e in reversed(since) if e["actor"] == "rollout"]
        assert ("rollout-resume", "ok") in done_by_runner and ("rollout-abort", "ok") not in done_by_runner, since
        resumed = next(e for e in since if e["action"] == "rollout-resume" and e["outcome"] == "ok")
        assert "took over from replica a, which is silent" in resumed["detail"], resumed
    assert "stops driving the rollout" in a.log()


async def _active(app: ck.App, name: str) -> bool:
    return (await ck.healthz(app.url))[1]["active"] == name


async def test_a_user_whose_replica_dies_resumes_the_thread_through_nginx_on_the_other(cluster, admin_key):
    _, _, apps, lb = cluster
    chat = await ck.connect(lb.nginx.url, *rk.ADMIN)
    try:
        asked = await chat.ask("Where is the station?", timeout=30)
        answer, thread = asked[-1].output, chat.thread_id
    finally:
        await chat.close()
    home = lb.app_at(next(r.answered_by for r in reversed(lb.nginx.requests()) if r.path.startswith("/ws/socket.io")))
    home.proc.kill()
    home.proc.wait()
    token = await ck.login(lb.nginx.url, *rk.ADMIN)
    again = ck.ChatClient(lb.nginx.url, token, rk.ADMIN[0])
    await again.connect(thread)
    try:
        resumed = await again.wait_for(lambda: next((d for n, d in again.events if n == "resume_thread"), None), 15,
                                       "the resumed thread")
        outputs = [step.get("output") for step in resumed["steps"]]
        assert "Where is the station?" in outputs and answer in outputs, outputs
        more = await again.ask("Good morning", timeout=30)  # and the thread goes on there
        assert more[-1].attribution is not None, more[-1].output
    finally:
        await again.close()
    survivor = next(a for a in apps if a is not home)
    last = next(r for r in reversed(lb.nginx.requests()) if r.path.startswith("/ws/socket.io"))
    assert last.answered_by == f"127.0.0.1:{survivor.port}", last  # nginx may first try the dead one
