"""Shadow traffic in the engine, over the fake server: copies compared and never shown, the
deployment's shadow invariants, refusals, restarts, and shadows that fail. No vLLM.

The fake server answers `<name> says: <prompt words>`: v2 answers differently from v1, `twin`
(answer_as v1) exactly like it.
"""
from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import time

import pytest
from prometheus_client import REGISTRY

from engine import Conflict, Engine, InvalidArgument, NotReady, TranslationRequest
from engine.livestats import LiveStats
from engine.states import State

from .chatkit import wait_until
from .conftest import fake_model, fake_settings, loaded_engine

PORTS = {"port_min": 28500, "port_max": 28699}


def settings(tmp_path, **overrides):
    return fake_settings(tmp_path, **PORTS, **overrides)


async def translate(eng: Engine, text: str = "good morning", conv: str = "c"):
    async def on_token(_: str) -> None:
        pass

    return await eng.translate(TranslationRequest(text, "French", conversation_id=conv), on_token)


def shadow_count(version: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("baton_shadow_requests_total", {"version": version, "outcome": outcome}) or 0.0


async def samples(eng: Engine, n: int) -> None:
    await wait_until(lambda: (s := eng.shadow_stats()) is not None and s.samples >= n, 15,
                     f"{n} shadow samples", detail=eng.shadow_stats)


async def audit_of(eng: Engine, action: str) -> list[tuple[str, str]]:
    return [(e.outcome, e.detail) for e in await eng.audit(100) if e.action == action]


@pytest.fixture
async def eng(tmp_path):
    """v1 active; v2 (answers differently) and twin (answers like v1) ready."""
    e = await loaded_engine(settings(tmp_path), ("v1", {}), ("v2", {}), ("twin", {"answer_as": "v1"}), active="v1")
    yield e
    await e.close()


# --------------------------------------------------------------------------------------------
async def test_a_shadow_answers_copies_that_nobody_sees_and_is_compared(eng):
    ok_before = shadow_count("v2", "ok")
    d = await eng.shadow("v2", 100, actor="ops")
    assert (d.shadow, d.shadow_percent) == ("v2", 100)
    assert (await eng.store.get_deployment()).shadow == "v2", "durable in the same change"
    assert (await eng.status()).version("v2").role == "shadow 100%"
    for i in range(4):
        result = await translate(eng, f"good morning number {i}")
        assert result.version == "v1" and result.text.startswith("v1 says:"), "users get the active version's answer"
    await samples(eng, 4)
    stats = eng.shadow_stats()
    assert stats is not None and stats.version == "v2" and stats.errors == 0
    assert stats.agreement is not None and 0 < stats.agreement < 100, stats
    assert stats.p95_ms is not None and stats.primary_p95_ms is not None
    assert shadow_count("v2", "ok") - ok_before == 4
    # Shadow copies are not routed answers of v2: a rollout's analysis of v2 must not see them.
    assert eng.live_sample("v2").answers == 0 and eng.live_sample("v1").answers == 4

    # A new shadow starts from nothing; one that answers like v1 agrees fully.
    await eng.shadow("twin", 100)
    assert eng.shadow_stats().samples == 0
    await translate(eng)
    await translate(eng, "thank you very much")
    await samples(eng, 2)
    assert eng.shadow_stats().agreement == 100.0
    # A new percent for the same shadow keeps its statistics.
    await eng.shadow("twin", 50)
    assert eng.shadow_stats().samples == 2 and eng.shadow_stats().percent == 50

    await eng.stop_shadow(actor="ops")
    assert eng.router.deployment.shadow is None and eng.shadow_stats() is None
    before = shadow_count("twin", "ok")
    await translate(eng)
    await asyncio.sleep(0.3)
    assert shadow_count("twin", "ok") == before, "nothing is copied once the shadow is off"
    assert [o for o, _ in await audit_of(eng, "shadow")] == ["ok", "ok", "ok"]
    assert await audit_of(eng, "shadow-off") == [("ok", "active=v1 previous=None canary=None:0% shadow=None:0%")]


async def test_a_share_of_requests_is_copied(eng):
    await eng.shadow("v2", 30)
    for i in range(40):
        await translate(eng, f"word {i}", conv=f"c{i}")
    await wait_until(lambda: eng.pool.get("v2").traffic.in_flight == 0, 10, "the last copies to end")
    await asyncio.sleep(0.2)
    stats = eng.shadow_stats()
    copied = stats.samples + stats.skipped
    assert 2 <= copied <= 25, f"about 30 % of 40 requests, got {copied}"


async def test_refusals_change_nothing_and_are_audited(eng, tmp_path):
    await eng.shadow("v2", 10)
    before = (eng.router.deployment, await eng.store.get_deployment())
    with pytest.raises(Conflict, match="active: it cannot shadow itself"):
        await eng.shadow("v1", 10)
    with pytest.raises(InvalidArgument, match="1-100, not 0"):
        await eng.shadow("twin", 0)
    with pytest.raises(InvalidArgument, match="1-100, not 101"):
        await eng.shadow("twin", 101)
    with pytest.raises(NotReady, match="not loaded"):
        await eng.shadow("ghost", 10)
    assert (eng.router.deployment, await eng.store.get_deployment()) == before
    refused = [d for o, d in await audit_of(eng, "shadow") if o == "refused"]
    assert len(refused) == 4
    await eng.stop_shadow()
    with pytest.raises(Conflict, match="no shadow to stop"):
        await eng.stop_shadow()

    # Without an active version there is nothing to shadow, and a version still starting cannot.
    fresh = await loaded_engine(settings(tmp_path / "other"), ("a", {}))
    try:
        with pytest.raises(Conflict, match="No version is active"):
            await fresh.shadow("a", 10)
        await fresh.switch("a")
        await fresh.register("late", fake_model(fresh.settings, "late", startup_s=30))
        await fresh.load("late")
        with pytest.raises(NotReady, match="late' is starting"):
            await fresh.shadow("late", 10)
        assert fresh.router.deployment.shadow is None
    finally:
        await fresh.close()


async def test_the_shadow_is_never_active_and_never_unloaded(eng):
    # A switch to the shadow ends the shadow in the same change.
    await eng.shadow("v2", 50)
    d = await eng.switch("v2")
    assert (d.active, d.shadow, d.shadow_percent) == ("v2", None, 0)
    assert (await eng.store.get_deployment()).shadow is None
    assert (await audit_of(eng, "switch"))[0] == ("ok", "active=v2 previous=v1 canary=None:0% shadow=None:0%")
    # So does a rollback to it ...
    await eng.shadow("v1", 50)
    d = await eng.rollback()
    assert (d.active, d.shadow) == ("v1", None)
    # ... and a promotion of a canary that was also the shadow.
    await eng.canary("twin", 20)
    await eng.shadow("twin", 50)
    assert (await eng.status()).version("twin").role == "canary 20%, shadow 50%"
    d = await eng.promote()
    assert (d.active, d.canary, d.shadow) == ("twin", None, None)
    # Unloading the shadow clears it in the same change (as it clears the standby).
    await eng.shadow("v2", 50)
    await eng.unload("v2")
    assert eng.router.deployment.shadow is None and (await eng.store.get_deployment()).shadow is None
    with pytest.raises(NotReady, match="not loaded"):
        await eng.shadow("v2", 50)


async def test_a_restart_keeps_the_shadow(tmp_path):
    s = settings(tmp_path)
    e = await loaded_engine(s, ("v1", {}), ("v2", {}), active="v1")
    await e.shadow("v2", 100)
    await e.close()
    again = Engine(s)
    try:
        dep = await again.start()
        assert (dep.shadow, dep.shadow_percent) == ("v2", 100)
        await again.wait_loaded("v2")
        await again.wait_loaded("v1")
        await translate(again)
        await samples(again, 1)
    finally:
        await again.close()


async def test_a_database_from_before_shadows_is_upgraded(tmp_path):
    """A database from before shadows was also from before the migrations: it is made here by
    taking away what came since (the shadow columns, 0002_replicas, 0003_rollout_runner,
    0004_answer_checks, 0005_translation_memory, 0006_key_usage_named_glossaries, Alembic's own table)."""
    s = settings(tmp_path)
    e = await loaded_engine(s, ("v1", {}), active="v1")
    await e.close()
    with sqlite3.connect(tmp_path / "baton.db") as db:
        for table, column in (("deployment", "shadow"), ("deployment", "shadow_percent"),
                              ("deployment", "generation"), ("model_versions", "url"),
                              ("model_versions", "api_key_env"), ("backend_processes", "replica"),
                              ("rollouts", "runner"), ("model_versions", "on_wrong_language")):
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        db.execute("DROP TABLE replicas")
        for table in ("memory_entries", "key_usage", "named_glossaries"):
            db.execute(f"DROP TABLE {table}")
        db.execute("DROP TABLE alembic_version")
    again = Engine(s)
    try:
        dep = await again.start()
        assert (dep.active, dep.shadow, dep.shadow_percent) == ("v1", None, 0)
    finally:
        await again.close()


async def test_a_failing_shadow_never_touches_the_answers(tmp_path):
    """A shadow that stalls (tokens stop, /health stays fine) or is killed: users' answers come
    whole, from v1, as fast as without a shadow; the copies are bounded, the stall is noticed by
    the supervisor, and the statistics count the errors."""
    s = settings(tmp_path, shadow_max_in_flight=1, first_token_timeout_s=3, between_tokens_timeout_s=3)
    e = await loaded_engine(s, ("v1", {}), ("stuck", {"stall_after": 0}), active="v1")
    try:
        await e.shadow("stuck", 100)
        skipped = shadow_count("stuck", "skipped")
        for i in range(5):
            t0 = time.monotonic()
            result = await translate(e, f"hello {i}")
            assert result.version == "v1" and result.text.startswith("v1 says:")
            assert time.monotonic() - t0 < 1.0, "the user never waits for the shadow"
        assert shadow_count("stuck", "skipped") - skipped == 4, "one copy at a time; the others are skipped"
        await samples(e, 1)
        stats = e.shadow_stats()
        assert stats.errors == 1 and stats.agreement is None and stats.skipped == 4
        # The stalled copy was reported: the supervisor restarts the shadow like any hung version.
        await wait_until(lambda: e.pool.get("stuck").restarts >= 1, 15, "the stalled shadow restarted")
        assert e.router.deployment.shadow == "stuck", "a restart does not end the shadow"

        # A shadow killed while it answers a copy.
        await e.stop_shadow()
        await e.register("v2", fake_model(s, "v2", token_delay_s=0.3))
        await e.load("v2")
        await e.wait_loaded("v2")
        await e.shadow("v2", 100)
        await translate(e)
        pid = e.pool.get("v2").pid
        await asyncio.sleep(0.3)  # the copy is streaming
        os.kill(pid, signal.SIGKILL)
        result = await translate(e, "are you still there")
        assert result.version == "v1" and result.text.startswith("v1 says:")
        await samples(e, 1)
        assert e.shadow_stats().errors >= 1
    finally:
        await e.close()


async def test_close_cancels_the_copies_in_flight(tmp_path):
    s = settings(tmp_path, first_token_timeout_s=60)
    e = await loaded_engine(s, ("v1", {}), ("stuck", {"stall_after": 0}), active="v1")
    await e.shadow("stuck", 100)
    await translate(e)
    await asyncio.sleep(0.2)
    assert e.pool.get("stuck").traffic.in_flight == 1
    t0 = time.monotonic()
    await e.close()
    assert time.monotonic() - t0 < 15, "close does not wait for a hung copy's 60 s deadline"
    assert e.pool.get("stuck").state is State.STOPPED


def test_a_changed_vote_counts_once_and_a_taken_back_one_not_at_all():
    now = [0.0]
    live = LiveStats(clock=lambda: now[0])
    live.voted("v1", True, "a1")
    live.voted("v1", False, "a1")  # changed its mind
    live.voted("v1", False, "a2")
    live.voted("v1", None, "a2")  # took it back
    live.voted("v1", True)  # no answer named: counts as it is
    live.voted("v1", True)
    s = live.sample("v1")
    assert (s.votes_up, s.votes_down) == (2, 1)
    now[0] = 10.0
    live.voted("v1", True, "a1")  # the latest vote on a1 is inside the window
    assert (live.sample("v1", since=5.0).votes_up, live.sample("v1", since=5.0).votes_down) == (1, 0)
