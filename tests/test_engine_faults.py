"""One test for each fault of issue 8, driven through the engine over the fake server, each
asserting what a user or an operator sees. Real-vLLM counterparts (SIGSTOP, SIGKILL mid-answer)
are in test_engine_vllm.py.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from pathlib import Path

import pytest

from engine import Desired, Engine, NotReady, StoreUnavailable
from engine.states import State

from .conftest import fake_model, fake_settings, loaded_engine
from .test_engine_fast import add_version, alive, locked_database, stream_in_background, translate, wait_for


def processes_serving(name: str) -> list[int]:
    """Pids of fake servers started for version `name` (by their command line)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        guard = any(a.endswith(b"guard.py") for a in argv)
        if b"tests.fake_vllm" in argv and name.encode() in argv and not guard:
            found.append(int(cmdline.parent.name))
    return [p for p in found if alive(p)]


async def durable(eng: Engine):
    return await eng.store.get_deployment()


async def wait_until(check, eng: Engine, timeout: float = 5) -> None:
    """Poll the audit log until `check(events)` holds; fail loudly at the deadline."""
    deadline = time.monotonic() + timeout
    while not check(audit := await eng.audit(20)):
        if time.monotonic() > deadline:
            raise AssertionError(f"not audited within {timeout} s: {[(a.action, a.outcome) for a in audit]}")
        await asyncio.sleep(0.05)


def roles(d) -> tuple:
    return d.active, d.previous, d.canary, d.canary_percent


async def check_invariant(eng: Engine) -> None:
    """Active, canary and standby name versions that are loaded or loading, in memory and on disk."""
    d = eng.router.deployment
    assert roles(d) == roles(await durable(eng))
    for name in (d.active, d.canary, d.previous):
        if name:
            b = eng.pool.get(name)
            assert b is not None and b.desired is not Desired.UNLOADED, f"{name} is named but not loaded"


# 1 ------------------------------------------------------------------------------------
async def test_1_a_start_that_raises_lands_as_failed_with_the_reason(tmp_path, caplog):
    settings = fake_settings(tmp_path, vllm_python=tmp_path / "no-such-python")
    eng = await loaded_engine(settings)
    try:
        await eng.register("v1", fake_model(settings, "v1"), interpreter=None)
        await eng.load("v1")
        started = time.monotonic()
        with pytest.raises(NotReady, match="'v1' failed to start: the process exited before it started"):
            await eng.wait_loaded("v1")
        assert time.monotonic() - started < 10  # not "starting" forever
        assert (await eng.status()).version("v1").state == "failed"
        assert any(a.action == "load" and a.outcome == "failed" for a in await eng.audit(5))
        assert "No such file" in "\n".join(await eng.logs("v1", 20))  # the operator sees why
    finally:
        await eng.close()

    # An exception in a listener is logged and does not stop the version getting ready.
    eng = await loaded_engine(fake_settings(tmp_path / "b"))
    try:
        def broken(_backend) -> None:
            raise RuntimeError("listener bug")

        eng.pool.listeners.append(broken)
        await eng.register("v2", fake_model(eng.settings, "v2"))
        await eng.load("v2")
        with caplog.at_level(logging.ERROR):
            assert (await eng.wait_loaded("v2")).state == "ready"
        assert "listener bug" in caplog.text
    finally:
        await eng.close()


# 2 ------------------------------------------------------------------------------------
async def test_2_a_frozen_backend_is_noticed_its_traffic_moves_and_it_restarts(fake_engine):
    eng = fake_engine
    v1 = eng.pool.get("v1")
    old_pid = v1.pid
    task, pieces, _ = await stream_in_background(eng)
    await wait_for(lambda: v1.traffic.in_flight == 1, 5)
    os.kill(old_pid, signal.SIGSTOP)
    frozen = time.monotonic()
    noticed = await wait_for(lambda: v1.state is not State.READY, 5)
    assert noticed <= eng.settings.liveness_interval_s + eng.settings.liveness_timeout_s + 0.5
    r = await task  # the answer that was streaming from the frozen backend comes whole from v2
    assert r.version == "v2" and "".join(pieces) == r.text and r.text.startswith("v2 says:")
    assert time.monotonic() - frozen < 5
    assert (await translate(eng)).version == "v2"  # new requests fail over meanwhile
    await wait_for(lambda: v1.state is State.READY and v1.pid != old_pid, 15)
    assert not alive(old_pid)  # the frozen process was killed, not left behind
    # Audit rows are written off the supervisor's path: poll for them.
    await wait_until(lambda events: any(a.action == "unhealthy" and "/health did not answer" in a.detail
                                        for a in events), eng)
    await wait_until(lambda events: any(a.action == "restart" and a.outcome == "ok" for a in events), eng)


async def test_2_a_stalled_stream_with_a_healthy_port_is_noticed(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {"stall_after": 2}), ("v2", {}), active="v1")
    try:
        await eng.switch("v2")
        await eng.switch("v1")
        started = time.monotonic()
        task, pieces, restarts = await stream_in_background(eng)
        r = await task
        assert r.version == "v2" and "".join(pieces) == r.text and [x.version for x in restarts] == ["v1"]
        assert "Version v1 stopped answering (stalled: no token for 2 s)" in r.retranslated
        assert time.monotonic() - started < settings.between_tokens_timeout_s + 2
        await wait_until(lambda events: any(a.action == "unhealthy" and "stalled" in a.detail for a in events), eng)
    finally:
        await eng.close()


async def test_2_a_backend_printing_huge_lines_keeps_answering(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {"log_line_bytes": 2_000_000}), active="v1")
    try:
        for i in range(5):
            assert (await translate(eng, conv=f"c{i}")).version == "v1"
        assert len((await eng.logs("v1", 1))[0]) == 2_000_000
    finally:
        await eng.close()


# 3 ------------------------------------------------------------------------------------
@pytest.mark.parametrize("first", ["switch", "unload"])
async def test_3_switch_and_unload_of_the_same_version_at_once(fake_engine, first):
    eng = fake_engine
    ops = {"switch": lambda: eng.switch("v2", actor="alice"), "unload": lambda: eng.unload("v2", actor="bob")}
    second = "unload" if first == "switch" else "switch"
    outcomes = await asyncio.gather(ops[first](), ops[second](), return_exceptions=True)
    won = dict(zip((first, second), outcomes))
    # Exactly one wins; the loser was refused with a reason.
    assert isinstance(won[second], Exception) and not isinstance(won[first], Exception)
    await check_invariant(eng)
    assert (await translate(eng)).version == eng.router.deployment.active
    if first == "switch":
        assert "serving as active" in str(won["unload"])
    else:
        assert "being unloaded" in str(won["switch"]) and eng.pool.get("v2") is None


# 4 ------------------------------------------------------------------------------------
async def test_4_a_cancelled_switch_still_commits_and_flips_as_one(fake_engine, monkeypatch):
    eng = fake_engine
    entered, release = asyncio.Event(), asyncio.Event()
    real = eng.store.save_change

    async def slow_commit(change):
        entered.set()
        await release.wait()
        return await real(change)

    monkeypatch.setattr(eng.store, "save_change", slow_commit)
    caller = asyncio.create_task(eng.switch("v2", actor="alice"))
    await entered.wait()
    caller.cancel()  # e.g. the admin pressed Stop
    with pytest.raises(asyncio.CancelledError):
        await caller
    release.set()
    await wait_for(lambda: eng.router.deployment.active == "v2", 5)
    await check_invariant(eng)
    # The newest switch row (the supervisor audits a backend's readiness in the background, so a
    # late "load ok" may land after it).
    switch = next(e for e in await eng.audit(10) if e.action == "switch")
    assert (switch.outcome, switch.actor) == ("ok", "alice")


# 5 ------------------------------------------------------------------------------------
async def test_5_two_loads_at_once_start_one_process(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings)
    await eng.register("twin", fake_model(settings, "twin"))
    first, second = await asyncio.gather(eng.load("twin"), eng.load("twin"))
    assert first.pid is None or first.pid == second.pid or second.pid is None
    await eng.wait_loaded("twin")
    assert len(processes_serving("twin")) == 1
    joined = [a.detail for a in await eng.audit(5) if a.action == "load" and a.actor == "system"]
    assert joined[:2] == ["already starting: joined", "starting"]
    await eng.close()
    await wait_for(lambda: not processes_serving("twin"), 5)


# 6 ------------------------------------------------------------------------------------
async def test_6_a_crash_while_draining_ends_stopped_not_restarted(fake_engine):
    eng = fake_engine
    slow = await add_version(eng, "slow", switch=True, token_delay_s=0.3)
    task, pieces, restarts = await stream_in_background(eng)
    await wait_for(lambda: len(pieces) >= 1, 5)
    await eng.switch("v1")
    unloading = asyncio.create_task(eng.unload("slow"))
    await wait_for(lambda: slow.state is State.DRAINING, 5)
    os.kill(slow.pid, signal.SIGKILL)
    await unloading
    assert slow.state is State.STOPPED and eng.pool.get("slow") is None
    assert not processes_serving("slow")
    r = await task  # the answer it was draining is translated again, whole, by v1
    assert r.version == "v1" and "".join(pieces) == r.text and restarts
    await asyncio.sleep(eng.settings.restart_backoff_s * 3)
    assert not processes_serving("slow"), "an unloaded version was restarted"


# 7 ------------------------------------------------------------------------------------
async def test_7_a_load_that_cannot_be_recorded_starts_nothing(fake_engine, tmp_path):
    eng = fake_engine
    await eng.register("v3", fake_model(eng.settings, "v3"))
    with locked_database(tmp_path / "baton.db"), \
            pytest.raises(StoreUnavailable, match="database is locked.*nothing was changed"):
        await eng.load("v3")
    assert eng.pool.get("v3") is None and not processes_serving("v3")
    status = await eng.status()
    assert status.version("v3").state == "registered"


# 8 ------------------------------------------------------------------------------------
async def test_8_a_backend_killed_mid_answer_gives_a_whole_answer_from_one_version(fake_engine):
    eng = fake_engine
    slow = await add_version(eng, "slow", switch=True, token_delay_s=0.3)
    task, pieces, restarts = await stream_in_background(eng)
    await wait_for(lambda: len(pieces) >= 2, 5)
    os.kill(slow.pid, signal.SIGKILL)
    r = await task
    assert [x.version for x in restarts] == ["slow"]
    assert r.version == "v1" and r.role == "standby" and r.finish_reason == "stop"
    assert "".join(pieces) == r.text and r.text.startswith("v1 says:") and "slow" not in r.text
    assert "Version slow" in r.retranslated and "translated again from the start" in r.retranslated


# 9 ------------------------------------------------------------------------------------
async def test_9_after_a_restart_the_standby_comes_back_and_unloaded_stays_away(tmp_path):
    settings = fake_settings(tmp_path)
    eng = await loaded_engine(settings, ("v1", {}), ("v2", {}), ("v3", {}), active="v1")
    await eng.switch("v2")  # v1 standby
    await eng.unload("v3")
    await eng.close()

    again = Engine(settings)
    await again.start()
    try:
        await again.wait_loaded("v1")
        await again.wait_loaded("v2")
        assert again.pool.get("v3") is None
        dep = await again.rollback()  # works at once: the standby is loaded
        assert dep.active == "v1" and (await translate(again)).version == "v1"
        wanted = {v.name: v.desired for v in (await again.status()).versions}
        assert wanted == {"v1": "serving", "v2": "standby", "v3": "unloaded"}
    finally:
        await again.close()


# 10 -----------------------------------------------------------------------------------
async def test_10_requests_without_a_conversation_split_by_the_canary_share(fake_engine):
    eng = fake_engine
    await eng.canary("v2", 30)
    answers = await asyncio.gather(*(translate(eng, conv="") for _ in range(200)))
    share = sum(r.version == "v2" for r in answers) / len(answers)
    assert 0.15 < share < 0.45


# 11 -----------------------------------------------------------------------------------
async def test_11_logs_are_capped_and_health_answers_from_memory(tmp_path):
    settings = fake_settings(tmp_path, log_max_bytes=300_000)
    eng = await loaded_engine(settings, ("v1", {"log_line_bytes": 100_000}), active="v1")
    try:
        log_file = settings.log_dir / "v1.log"
        for i in range(40):
            await translate(eng, conv=f"c{i}")
            await asyncio.sleep(0.3)
            if log_file.stat().st_size < 150_000 and log_file.with_name("v1.log.1").exists():
                break
        assert log_file.with_name("v1.log.1").exists(), "the log was never rotated"
        assert log_file.stat().st_size + log_file.with_name("v1.log.1").stat().st_size < 8 * 300_000
        assert len(await eng.logs("v1", 3)) == 3

        with locked_database(tmp_path / "baton.db"):
            assert eng.health().status == "ok"  # a locked database does not make it look down
            assert (await translate(eng)).version == "v1"
    finally:
        await eng.close()
