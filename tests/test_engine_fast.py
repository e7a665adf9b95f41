"""Engine behaviour over the fake OpenAI-compatible server: races, faults, refusals. No vLLM."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from engine import (
    BackendFailed,
    Conflict,
    Engine,
    InvalidArgument,
    NoBackendAvailable,
    NotFound,
    NotReady,
    Restart,
    RouteInfo,
    StoreUnavailable,
    Settings,
    TranslationRequest,
)
from engine.backend import MARKER_ENV
from engine.states import State
from engine.store import Change, Store
from engine.types import Deployment, RolloutPlan, RolloutRecord

from .chatkit import wait_until
from .conftest import ROOT, fake_model, fake_settings, loaded_engine


async def translate(eng: Engine, conv: str = "c", text: str = "good morning"):
    pieces: list[str] = []

    async def on_token(t: str) -> None:
        pieces.append(t)

    result = await eng.translate(TranslationRequest(text, "French", conversation_id=conv), on_token)
    assert "".join(pieces) == result.text
    return result


async def snapshot(eng: Engine):
    return eng.router.deployment, await eng.store.get_deployment()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


async def wait_for(predicate, timeout: float, step: float = 0.02) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"condition not met within {timeout} s")
        await asyncio.sleep(step)
    return time.monotonic() - start


async def stream_in_background(eng: Engine, conv: str = "c", text: str = "good morning"):
    """Start a translation; return its task, its visible tokens (cleared when the answer is
    translated again, as the chat does) and the restarts it was told about."""
    pieces: list[str] = []
    restarts: list[Restart] = []

    async def on_token(t: str) -> None:
        pieces.append(t)

    async def on_restart(r: Restart) -> None:
        restarts.append(r)
        pieces.clear()

    task = asyncio.create_task(eng.translate(TranslationRequest(text, "French", conversation_id=conv),
                                             on_token, on_restart=on_restart))
    return task, pieces, restarts


async def add_version(eng: Engine, name: str, *, switch: bool = False, **knobs):
    """Register, load and wait for a fake version; make it active if asked. Its backend."""
    await eng.register(name, fake_model(eng.settings, name, **knobs))
    await eng.load(name)
    await eng.wait_loaded(name)
    if switch:
        await eng.switch(name)
    return eng.pool.get(name)


@contextlib.contextmanager
def locked_database(path: Path):
    """Another process holds the SQLite file's write lock meanwhile."""
    locker = sqlite3.connect(path, timeout=1)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        locker.rollback()
        locker.close()


# ---------------------------------------------------------------------------- switching


async def _tokens(_: str) -> None:
    """The tokens of an answer this test reads whole."""


async def test_switches_under_concurrent_streams_drop_nothing(fake_engine):
    eng = fake_engine
    stop = asyncio.Event()
    results, failures = [], []
    switch_log: list[tuple[float, float, str]] = []  # (called, returned, version)

    async def client(i: int) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            routed: list[float] = []

            async def on_route(_: RouteInfo) -> None:
                routed.append(time.monotonic())

            try:
                r = await eng.translate(TranslationRequest("good morning", "French", conversation_id=f"user{i}-{n}"),
                                        _tokens, on_route=on_route)
                results.append((routed[-1], r))
            except Exception as exc:  # noqa: BLE001 - every failure is a test failure
                failures.append(exc)

    clients = [asyncio.create_task(client(i)) for i in range(8)]
    target = "v2"
    # At least 60 switches, and on until 200 answers have run across them (a busy machine answers fewer
    # per switch); bounded, so a stuck engine fails the count below.
    while (len(switch_log) < 60 or len(results) <= 200) and len(switch_log) < 600:
        called = time.monotonic()
        await eng.switch(target)
        switch_log.append((called, time.monotonic(), target))
        target = "v1" if target == "v2" else "v2"
        await asyncio.sleep(0.03)
    stop.set()
    await asyncio.gather(*clients)

    assert not failures
    assert len(results) > 200
    for _, r in results:
        assert r.finish_reason == "stop"
        assert r.text.startswith(f"{r.version} says:")  # the text really came from that version
        assert r.served_by == r.version
    # Every request routed after a switch returned (and before the next one was called) was served by
    # the version switched to. (Routed, not started: detection and lookups come first, and on a busy
    # machine the next switch may land in between.)
    checked = 0
    for (called, returned, version), nxt in zip(switch_log, switch_log[1:] + [(float("inf"), 0, "")]):
        for routed_at, r in results:
            if returned < routed_at < nxt[0]:
                assert r.version == version
                checked += 1
    assert checked > 50


async def test_switch_refusals_change_nothing(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {}), active="v1")
    try:
        await eng.register("slow", fake_model(settings, "slow", startup_s=60))
        await eng.load("slow")
        await eng.register("broken", fake_model(settings, "broken", exit_at_start=True))
        await eng.load("broken")
        with pytest.raises(NotReady, match="'broken' failed to start: process exited unexpectedly"):
            await eng.wait_loaded("broken")
        before = await snapshot(eng)

        with pytest.raises(NotReady, match="'nope' is not loaded"):
            await eng.switch("nope")
        with pytest.raises(NotReady, match="'slow' is starting"):
            await eng.switch("slow")
        with pytest.raises(NotReady, match=r"'broken' is failed: process exited unexpectedly \(exit code 3\).*refusing to start"):
            await eng.switch("broken")
        with pytest.raises(InvalidArgument, match="not a valid version name"):
            await eng.switch("v1; rm -rf /")
        with pytest.raises(Conflict, match="already active"):
            await eng.switch("v1")

        assert await snapshot(eng) == before
        assert before[0].active == "v1"
        refused = [a for a in await eng.audit(10) if a.action == "switch" and a.outcome == "refused"]
        assert len(refused) == 5
        assert (await translate(eng)).version == "v1"
    finally:
        await eng.close()


async def test_rollback_canary_promote(fake_engine):
    eng = fake_engine
    dep = await eng.rollback()
    assert (dep.active, dep.previous) == ("v2", "v1")
    assert (await translate(eng)).version == "v2"
    await eng.rollback()

    await eng.canary("v2", 30)
    answers = await asyncio.gather(*(translate(eng, conv=f"conv-{conv}") for conv in range(200)))
    versions = {conv: r.version for conv, r in enumerate(answers)}
    share = sum(v == "v2" for v in versions.values()) / len(versions)
    assert 0.15 < share < 0.45
    for conv, version in list(versions.items())[:40]:  # sticky per conversation
        assert (await translate(eng, conv=f"conv-{conv}")).version == version
        assert (await translate(eng, conv=f"conv-{conv}")).role in ("active", "canary")

    with pytest.raises(InvalidArgument, match="1-99"):
        await eng.canary("v2", 150)
    with pytest.raises(Conflict, match="serving as canary"):
        await eng.unload("v2")

    dep = await eng.promote()
    assert (dep.active, dep.previous, dep.canary) == ("v2", "v1", None)
    assert {(await translate(eng, conv=f"conv-{c}")).version for c in range(20)} == {"v2"}
    assert (await eng.store.get_deployment()).active == "v2"


async def test_two_admins_switching_at_once_are_serialized(fake_engine):
    eng = fake_engine
    outcomes = await asyncio.gather(
        *(eng.switch(name, actor=f"admin{i}") for i in range(10) for name in ("v1", "v2")),
        return_exceptions=True,
    )
    assert all(isinstance(o, Conflict) or o.active in ("v1", "v2") for o in outcomes)
    memory, durable = await snapshot(eng)
    assert memory.active == durable.active and memory.previous == durable.previous
    assert memory.previous != memory.active
    # Serialized: in the order they committed, each switch starts from the state the one before
    # it left (a switch computed from a stale deployment would break the chain).
    rows = [a for a in reversed(await eng.audit(40)) if a.action == "switch" and a.actor.startswith("admin")]
    oks = [dict(kv.split("=") for kv in a.detail.split()[:2]) for a in rows if a.outcome == "ok"]
    assert len(oks) >= 10 and len(oks) + sum(isinstance(o, Conflict) for o in outcomes) == len(outcomes)
    for before, after in zip(oks, oks[1:]):
        assert after["previous"] == before["active"] and after["active"] != before["active"]
    assert oks[-1]["active"] == memory.active


async def test_restarts_back_off_exponentially(tmp_path):
    settings = fake_settings(tmp_path, restart_backoff_s=0.4, restart_backoff_max_s=30)
    eng = await loaded_engine(settings, ("v1", {}), active="v1")
    try:
        v1 = eng.pool.get("v1")
        gaps = []
        for _ in range(3):
            pid = v1.pid
            os.kill(pid, signal.SIGKILL)
            died = time.monotonic()
            await wait_for(lambda: v1.state is State.STARTING and v1.pid != pid, 10, step=0.01)
            gaps.append(time.monotonic() - died)
            await wait_for(lambda: v1.state is State.READY, 10)
        # The floors prove the doubling; the ceilings leave room for a busy machine.
        assert 0.4 <= gaps[0] < 1.9 and 0.8 <= gaps[1] < 2.3 and 1.6 <= gaps[2] < 3.1, gaps
        assert v1.restarts == 3
    finally:
        await eng.close()


async def test_drain_timeout_runs_out_and_the_answer_moves(fake_engine):
    eng = fake_engine
    eng.supervisor.settings = eng.settings.model_copy(update={"drain_timeout_s": 0.5})
    await add_version(eng, "slow", switch=True, token_delay_s=0.5)
    task, pieces, _ = await stream_in_background(eng)
    await wait_for(lambda: bool(pieces), 5)
    await eng.switch("v1")
    started = time.monotonic()
    assert await eng.unload("slow") is False  # the drain ran out
    assert time.monotonic() - started < 0.5 + eng.settings.stop_grace_s
    r = await task
    assert r.version == "v1" and "".join(pieces) == r.text and "stopped answering (it was unloaded)" in r.retranslated
    stop = next(a for a in await eng.audit(5) if a.action == "stop")
    assert "drain timeout (0.5 s) ran out" in stop.detail


async def test_sigterm_escalates_to_sigkill_after_the_grace_period(fake_engine):
    eng = fake_engine
    pid = (await add_version(eng, "stubborn", ignore_sigterm=True)).pid
    started = time.monotonic()
    assert await eng.unload("stubborn")
    took = time.monotonic() - started
    assert eng.settings.stop_grace_s <= took < eng.settings.stop_grace_s + 2
    assert not alive(pid)


# ---------------------------------------------------------------------------- persistence


async def test_new_engine_on_same_database_serves_same_version(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {}), ("v2", {}), active="v2")
    await eng.close()

    again = Engine(settings)
    dep = await again.start()
    try:
        assert dep.active == "v2"
        assert (await translate(again)).version == "v2"  # waits for the restored backend
        assert again.pool.get("v1") is not None  # the standby comes back too
    finally:
        await again.close()


async def test_database_locked_switch_fails_cleanly(fake_engine, tmp_path):
    eng = fake_engine
    before = await snapshot(eng)
    with locked_database(tmp_path / "baton.db"), \
            pytest.raises(StoreUnavailable, match="database is locked.*nothing was changed"):
        await eng.switch("v2")
    assert await snapshot(eng) == before
    assert (await translate(eng)).version == "v1"  # still serving


# ---------------------------------------------------------------------------- faults


async def test_killed_backend_fails_over_and_restarts(fake_engine):
    eng = fake_engine
    v1 = eng.pool.get("v1")
    old_pid = v1.pid
    os.kill(old_pid, signal.SIGKILL)
    noticed = await wait_for(lambda: v1.state is not State.READY, 2)
    assert noticed < 1.0
    r = await translate(eng)
    assert r.version == "v2" and r.role == "standby"
    assert "answered by standby v2" in r.failover_note
    await wait_for(lambda: v1.state is State.READY, 10)
    assert v1.pid != old_pid and v1.restarts == 1
    assert (await translate(eng)).version == "v1"
    # Audit rows are written off the supervisor's path: poll for them.
    events = await wait_until(lambda: _audited(eng, ("crash", "failed"), ("restart", "ok")), 5, "the crash audited")
    assert "killed by SIGKILL" in next(a for a in events if a.action == "crash").detail


async def _audited(eng: Engine, *wanted: tuple[str, str]) -> list | None:
    events = await eng.audit(20)
    return events if set(wanted) <= {(a.action, a.outcome) for a in events} else None


async def test_hanging_startup_times_out_and_cleans_up(tmp_path):
    settings = fake_settings(tmp_path, startup_timeout_s=2)
    eng = await loaded_engine(settings)
    try:
        await eng.register("hang", fake_model(settings, "hang", hang=True))
        await eng.load("hang")
        with pytest.raises(NotReady, match="not ready within 2 s"):
            await eng.wait_loaded("hang")
        b = eng.pool.get("hang")
        first_pid = b.pid
        assert b.state is State.FAILED and not alive(first_pid)
        await asyncio.sleep(0.5)
        assert b.pid == first_pid, "a failed recipe is not retried by itself"
        await eng.load("hang")  # an operator's /load tries again
        with pytest.raises(NotReady, match="not ready within 2 s"):
            await eng.wait_loaded("hang")
        assert b.pid != first_pid and not alive(b.pid)
    finally:
        await eng.close()


async def test_unload_drains_in_flight_stream(fake_engine, tmp_path):
    eng = fake_engine
    settings = eng.settings
    await add_version(eng, "slow", switch=True, token_delay_s=0.3)
    stream = asyncio.create_task(translate(eng))
    await wait_for(lambda: eng.pool.get("slow").traffic.in_flight == 1, 5)
    await eng.switch("v1")  # the stream keeps its lease on "slow"
    backend = eng.pool.get("slow")
    pid = backend.pid
    drained = await eng.unload("slow")
    assert drained
    assert stream.done()
    r = stream.result()
    assert r.version == "slow" and r.finish_reason == "stop"
    assert backend.state is State.STOPPED and not alive(pid)


async def test_nothing_ready_waits_with_progress_then_clear_error(tmp_path):
    settings = fake_settings(tmp_path, request_wait_s=1.5)
    eng = await loaded_engine(settings)
    try:
        waits = []

        async def on_wait(info) -> None:
            waits.append(info)

        with pytest.raises(NoBackendAvailable, match="No model version could answer within 2 s. No version is active yet"):
            await eng.translate(TranslationRequest("hi", "French"), lambda t: asyncio.sleep(0), on_wait)
        assert waits and "No version is active yet" in waits[0].detail
        health = eng.health()  # what /healthz says, with its 503
        assert health.status == "unavailable" and health.detail.startswith("No version is active yet")
    finally:
        await eng.close()


async def test_request_waits_for_version_that_is_starting(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {}), active="v1")
    await eng.close()
    (settings.model_roots[0] / "v1" / "fake.json").write_text('{"startup_s": 1.5}')
    again = Engine(settings)
    await again.start()
    try:
        waits = []

        async def on_wait(info) -> None:
            waits.append(info.detail)

        r = await again.translate(TranslationRequest("hi", "French"), lambda t: asyncio.sleep(0), on_wait)
        assert r.version == "v1"
        assert any("v1 is starting" in w for w in waits)
    finally:
        await again.close()


async def test_answer_length_cap_against_the_context(fake_engine):
    """Default sampling works on a small --max-model-len; a cap the context cannot hold fails the
    load (never ready, so never switched to); a prompt too long for cap + context is refused at
    once with vLLM's reason, not retried."""
    eng = fake_engine
    model = fake_model(eng.settings, "small")
    small = ["--max-model-len", "24"]
    await eng.register("small", model, flags=small)
    await eng.register("capped", model, flags=small, max_tokens=13)
    await eng.register("huge", model, flags=small, max_tokens=24)
    for name in ("small", "capped", "huge"):
        await eng.load(name)
    await eng.wait_loaded("small")
    await eng.wait_loaded("capped")
    with pytest.raises(NotReady, match="max_tokens 24 leaves no room for a prompt in its context of 24 tokens"):
        await eng.wait_loaded("huge")
    with pytest.raises(NotReady, match="huge' is failed: max_tokens 24"):
        await eng.switch("huge")
    await eng.switch("small")
    assert (await translate(eng)).version == "small"
    await eng.switch("capped")
    assert (await translate(eng, text="hi")).version == "capped"  # 11 prompt words + 13 fit in 24
    started = time.monotonic()
    with pytest.raises(BackendFailed, match=r"Version capped refused the request: 'max_tokens' is too large: 13.*"
                                            r"maximum context length is 24.*check the recipe of capped") as err:
        await translate(eng, text="a much longer text to translate")
    assert err.value.refused and not err.value.partial
    assert time.monotonic() - started < 1, "a refused request is not retried"


async def test_deployment_commit_without_a_database_file():
    """A database that is not a SQLite file (here in memory; PostgreSQL in production) commits the
    deployment and its audit row through the async driver instead of the one-round-trip path."""
    store = Store("sqlite+aiosqlite://")
    try:
        await store.migrate()
        saved = await store.save_change(Change(Deployment(active="v1", previous="v0"), {}, "ops", "switch", {"name": "v1"}, ""))
        assert saved.deployment.active == "v1" and (await store.get_deployment()).previous == "v0"
        assert [(e.actor, e.action, e.outcome) for e in await store.list_audit(5)] == [("ops", "switch", "ok")]
        # A rollout's state is committed with the traffic it sets, on this path too.
        plan = RolloutPlan((10, 100), 60.0, 0)
        started = RolloutRecord(None, "v2", "v1", plan, "running", 0, "ops")
        saved = await store.save_change(Change(replace(saved.deployment, canary="v2", canary_percent=10), {}, "ops",
                                               "rollout-start", {"name": "v2"}, "", started))
        assert saved.rollout is not None and saved.rollout.id is not None
        latest = await store.latest_rollout()
        assert latest is not None and (latest.id, latest.candidate, latest.plan) == (saved.rollout.id, "v2", plan)
        assert (await store.get_deployment()).canary == "v2"
    finally:
        await store.close()


# ---------------------------------------------------------------------------- processes


OWNER = """
import asyncio, sys
sys.path.insert(0, {root!r})
from tests.conftest import fake_settings, loaded_engine
from pathlib import Path
async def main():
    eng = await loaded_engine(fake_settings(Path({data!r})), ("v1", {{}}), ("v2", {{}}), active="v1")
    print(" ".join(str(b.pid) for b in eng.pool.backends.values()), flush=True)
    await asyncio.sleep(3600)
asyncio.run(main())
"""


def test_sigkill_of_engine_owner_leaves_no_backend(tmp_path):
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER.format(root=str(ROOT), data=str(tmp_path))],
        stdout=subprocess.PIPE, text=True,
    )
    pids = [int(p) for p in owner.stdout.readline().split()]
    assert len(pids) == 2 and all(alive(p) for p in pids)
    owner.kill()
    owner.wait()
    deadline = time.monotonic() + 5
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(p) for p in pids)


async def test_stale_recorded_process_is_ended_at_start(tmp_path):
    """Only this replica's own orphans: another replica's process on the same host, recorded in the
    same database, is alive and serving."""
    settings = fake_settings(tmp_path)
    me = settings.replica_id
    eng = await loaded_engine(settings)
    stray = subprocess.Popen(["sleep", "600"], env={**os.environ, MARKER_ENV: "m-123"}, start_new_session=True)
    innocent = subprocess.Popen(["sleep", "600"], start_new_session=True)
    neighbour = subprocess.Popen(["sleep", "600"], env={**os.environ, MARKER_ENV: "m-456"}, start_new_session=True)
    await eng.store.record_process(stray.pid, "v1", "m-123", me)
    await eng.store.record_process(innocent.pid, "v1", "m-other", me)  # pid reuse: not ours
    await eng.store.record_process(neighbour.pid, "v1", "m-456", "another-replica")
    await eng.close()
    again = Engine(settings)
    await again.start()
    try:
        assert stray.wait(timeout=5) == -signal.SIGKILL
        assert innocent.poll() is None and neighbour.poll() is None
        assert await again.store.list_processes(me) == []
        assert await again.store.list_processes("another-replica") == [(neighbour.pid, "v1", "m-456")]
    finally:
        innocent.kill()
        neighbour.kill()
        await again.close()


async def test_backends_run_at_the_configured_niceness_and_the_engine_keeps_its_own(tmp_path):
    own = os.getpriority(os.PRIO_PROCESS, 0)
    autogroup = Path("/proc/self/autogroup")
    own_group = autogroup.read_text() if autogroup.exists() else None
    eng = await loaded_engine(fake_settings(tmp_path, backend_nice=7), ("v1", {}), active="v1")
    try:
        pid = (await eng.status()).version("v1").pid
        assert os.getpriority(os.PRIO_PROCESS, pid) == min(own + 7, 19)
        if own_group is not None:  # across sessions only the autogroup's niceness counts
            assert Path(f"/proc/{pid}/autogroup").read_text().split()[-1] == "7"
            assert autogroup.read_text() == own_group
        guard = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        assert os.getpriority(os.PRIO_PROCESS, guard) == own
        assert os.getpriority(os.PRIO_PROCESS, 0) == own
    finally:
        await eng.close()


@pytest.mark.parametrize("value", ["-5", "20"])
def test_a_backend_niceness_out_of_range_is_refused_with_the_reason(monkeypatch, value):
    monkeypatch.setenv("BATON_BACKEND_NICE", value)
    with pytest.raises(ValueError, match=r"BATON_BACKEND_NICE must be 0\.\.19.*negative value.*root"):
        Settings()


# ---------------------------------------------------------------------------- bad input


async def test_bad_registrations_are_refused_and_save_nothing(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "config.json").write_text("{}")
    good = fake_model(settings, "good")
    try:
        cases = [
            (dict(name="../x", model_path=good), "not a valid version name"),
            (dict(name="v1", model_path=outside), "outside the allowed model roots"),
            (dict(name="v1", model_path=good / ".." / ".." / "elsewhere"), "outside the allowed model roots"),
            (dict(name="v1", model_path=settings.model_roots[0]), "not a model directory"),
            (dict(name="v1", model_path=good, flags=["--host", "0.0.0.0"]), "'--host' is not allowed"),
            (dict(name="v1", model_path=good, flags=["--dtype", "$(reboot)"]), "value '\\$\\(reboot\\)' for --dtype"),
            (dict(name="v1", model_path=good, prompt_template="no field"), "no \\{text\\} field"),
            (dict(name="v1", model_path=good, prompt_template="{text.__class__}"), "unknown fields"),
            (dict(name="v1", model_path=good, prompt_template="Translate: {text:.0}"), "drops the text"),
            (dict(name="v1", model_path=good, interpreter="/bin/sh"), "not one the operator allowed"),
        ]
        for kwargs, message in cases:
            with pytest.raises(InvalidArgument, match=message):
                await eng.register(**kwargs)
        assert await eng.store.list_versions() == []
        assert eng.pool.backends == {}
        with pytest.raises(NotFound, match="No version named 'ghost'"):
            await eng.load("ghost")
        spec = await eng.register("ok", good, flags=["--dtype=float32", "--enforce-eager", "--max-model-len", "512"])
        assert spec.flags == ("--dtype", "float32", "--enforce-eager", "--max-model-len", "512")
    finally:
        await eng.close()


async def test_backend_key_is_private_and_required(fake_engine):
    import httpx

    b = fake_engine.pool.get("v1")
    assert b.client.api_key not in Path(f"/proc/{b.pid}/cmdline").read_text()
    assert fake_engine.pool.get("v2").client.api_key != b.client.api_key
    async with httpx.AsyncClient() as http:
        resp = await http.post(f"{b.url}/v1/completions", json={"model": "v1", "prompt": "x", "max_tokens": 1})
        assert resp.status_code == 401


async def test_read_only_database_refuses_switch_and_keeps_serving(fake_engine, tmp_path):
    """The same database opened read-only (as on a read-only mount): a clear error, no flip."""
    eng = fake_engine
    ro = fake_settings(tmp_path, database_url=f"sqlite+aiosqlite:///file:{tmp_path / 'baton.db'}?mode=ro&uri=true")
    reader = Engine(ro)
    reader.pool = eng.pool  # same backends: only the database differs
    reader.router.pool = eng.pool
    reader.router.deployment = eng.router.deployment
    before = reader.router.deployment
    with pytest.raises(StoreUnavailable, match="readonly database.*nothing was changed.*writable"):
        await reader.switch("v2")
    assert reader.router.deployment == before
    assert (await eng.store.get_deployment()).active == "v1"
    await reader.store.close()


def test_the_serving_path_imports_no_openai_sdk():
    """Tokens are relayed without an SDK object per token: the engine and the gateway stream with
    httpx, and the openai SDK is only the tests' client (issue 21: 52 % of the app's CPU went to it)."""
    code = "import sys, engine, gateway; print(sorted(m for m in sys.modules if m.split('.')[0] == 'openai'))"
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]", loaded.stdout
