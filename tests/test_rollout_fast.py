"""Progressive rollouts on the fake server: ramp, analysis on live traffic, automatic abort and
promote, an admin's abort racing the runner, and a restart in the middle of a rollout."""
from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import pytest

from engine import Conflict, Engine, InvalidArgument, TranslationRequest
from tests import chatkit as ck
from tests.chatkit import wait_until

from .conftest import fake_settings, loaded_engine

# Short steps so a whole ramp fits in seconds; enough traffic to judge each one.
FAST = dict(port_min=29000, port_max=29499, rollout_step_s=1.0, rollout_min_requests=8, rollout_step_max_s=20,
            rollout_ttft_slack_ms=300)  # above what a busy 2-core machine adds to one answer


class Users:
    """Chat-like traffic: each request a new conversation, so the canary gets its share."""

    def __init__(self, eng: Engine) -> None:
        self.eng = eng
        self.answers: list[str] = []
        self.started: list[tuple[float, str]] = []  # (when the request began, who answered)
        self.failures: list[str] = []

    async def loop(self) -> None:
        while True:
            req = TranslationRequest("Good morning", "French", conversation_id=uuid.uuid4().hex)
            began = time.monotonic()
            try:
                r = await self.eng.translate(req, lambda _t: asyncio.sleep(0))
                self.answers.append(r.version)
                self.started.append((began, r.version))
            except Exception as exc:  # noqa: BLE001 - a failed request is what the test counts
                self.failures.append(repr(exc))

    def running(self, clients: int = 4):
        return ck.background(*(self.loop() for _ in range(clients)))


async def ended(eng: Engine, timeout: float = 30) -> str:
    view = await wait_until(lambda: (v := eng.rollout_status()) and v.record.state != "running" and v, timeout,
                            "the rollout to end")
    return view.record.state


@pytest.fixture
async def make_engine(tmp_path):
    made: list[Engine] = []

    async def make(candidate: dict, baseline: dict | None = None, **overrides) -> Engine:
        settings = fake_settings(tmp_path, **{**FAST, **overrides})
        eng = await loaded_engine(settings, ("v1", baseline or {}), ("v2", candidate), active="v1")
        made.append(eng)
        return eng

    yield make
    for eng in made:
        await eng.close()


async def test_a_healthy_candidate_ramps_through_every_step_to_promote(make_engine):
    eng = await make_engine({})
    said: list[str] = []

    async def hear(text: str) -> None:
        said.append(text)

    eng.notices.subscribe(hear)
    users = Users(eng)
    async with users.running():
        view = await eng.start_rollout("v2", steps=[10, 50, 100], actor="alice")
        assert (view.record.state, view.percent, eng.router.deployment.canary) == ("running", 10, "v2")
        assert await ended(eng) == "passed"
    d = eng.router.deployment
    assert (d.active, d.previous, d.canary) == ("v2", "v1", None)
    r = eng.rollout_status().record
    assert [e["percent"] for e in r.timeline] == [10, 50] and all(e["verdict"] == "pass" for e in r.timeline)
    assert all(e["canary"]["answers"] >= 8 for e in r.timeline)
    assert users.failures == [] and {"v1", "v2"} <= set(users.answers)
    actions = [e.action for e in reversed(await eng.audit(20)) if e.action.startswith("rollout")]
    assert actions == ["rollout-start", "rollout-step", "rollout-promote"]
    assert any("started a rollout" in t for t in said) and any("promoted" in t for t in said)


@pytest.mark.parametrize("baseline, candidate, why", [
    ({}, {"error_rate": 0.2}, "error rate"),
    ({"first_token_delay_s": 0.25}, {"first_token_delay_s": 0.75}, "first token p95"),
    # demo-v1's answer to "Good morning" into French: Chinese, where the active version answers in French.
    ({"answer": "Bonjour à vous tous"}, {"answer": "晚上好"}, "not in the target language"),
], ids=["errors-20pct", "3x-slower", "wrong-language"])
async def test_a_worse_candidate_aborts_at_the_first_analysis_and_traffic_moves_back(make_engine, baseline, candidate,
                                                                                     why):
    eng = await make_engine(candidate, baseline)
    users = Users(eng)
    async with users.running():
        await eng.start_rollout("v2", steps=[20, 50, 100], actor="alice")
        assert await ended(eng) == "aborted"
        d = eng.router.deployment
        assert (d.active, d.canary) == ("v1", None)
        aborted_at = time.monotonic()
        await wait_until(lambda: sum(t > aborted_at for t, _ in users.started) >= 20, 10, "answers after the abort")
        assert {v for t, v in users.started if t > aborted_at} == {"v1"}
    r = eng.rollout_status().record
    assert len(r.timeline) == 1 and r.timeline[0]["verdict"] == "fail" and r.timeline[0]["percent"] == 20
    assert why in r.detail and r.step == 0
    # Users never saw the candidate's errors: each failed answer was translated again on v1.
    assert users.failures == []
    abort = next(e for e in await eng.audit(10) if e.action == "rollout-abort")
    assert abort.actor == "rollout" and why in abort.detail


async def test_an_admin_abort_moves_traffic_back_at_once_and_the_runner_stops(make_engine):
    eng = await make_engine({}, rollout_step_s=30)
    await eng.start_rollout("v2", steps=[50, 100], actor="alice")
    # While it runs, the canary belongs to the rollout.
    for act in (eng.promote(actor="bob"), eng.canary("v2", 10, actor="bob"), eng.abort_canary(actor="bob"),
                eng.start_rollout("v2", actor="bob")):
        with pytest.raises(Conflict, match="rollout"):
            await act
    view = await eng.abort_rollout(actor="bob")
    assert view.record.state == "aborted" and "bob" in view.record.detail
    assert eng.router.deployment.canary is None
    with pytest.raises(Conflict, match="No rollout is running"):
        await eng.abort_rollout(actor="bob")
    await asyncio.sleep(1)  # the runner noticed and did nothing more
    assert eng.rollout_status().record.state == "aborted" and eng.router.deployment.active == "v1"


async def test_a_bad_plan_is_refused_and_changes_nothing(make_engine):
    eng = await make_engine({})
    for steps in ([50], [10, 50], [50, 20, 100], [0, 100], [10, 150]):
        with pytest.raises(InvalidArgument, match="ramp"):
            await eng.start_rollout("v2", steps=steps, actor="alice")
    with pytest.raises(Conflict, match="already active"):
        await eng.start_rollout("v1", actor="alice")
    assert eng.router.deployment.canary is None and eng.rollout_status() is None


async def test_a_switch_by_hand_during_a_rollout_stops_it_without_touching_traffic(make_engine):
    eng = await make_engine({}, rollout_step_s=30)
    await eng.start_rollout("v2", steps=[50, 100], actor="alice")
    await eng.switch("v2", actor="bob")  # the emergency path stays open
    assert await ended(eng, 10) == "aborted"
    d = eng.router.deployment
    assert (d.active, d.canary) == ("v2", None)
    assert "changed outside the rollout" in eng.rollout_status().record.detail


async def test_a_restart_mid_rollout_resumes_the_step_it_was_on(tmp_path):
    settings = fake_settings(tmp_path, **{**FAST, "rollout_step_s": 1.5})
    eng = await loaded_engine(settings, ("v1", {}), ("v2", {}), active="v1")
    try:
        async with Users(eng).running():
            await eng.start_rollout("v2", steps=[10, 30, 60, 100], actor="alice")
            await wait_until(lambda: eng.rollout_status().record.step >= 1, 20, "the second step")
    finally:
        await eng.close()
    step = eng.rollout_status().record.step
    # The database says what the traffic was: the step's canary share, with the rollout running.
    again = Engine(settings)
    try:
        await again.start()
        d = again.router.deployment
        assert (d.active, d.canary, d.canary_percent) == ("v1", "v2", [10, 30, 60, 100][step])
        view = again.rollout_status()
        assert view.record.state == "running" and view.record.step == step
        users = Users(again)
        async with users.running():
            assert await ended(again) == "passed"
        assert again.router.deployment.active == "v2" and users.failures == []
        actions = [e.action for e in await again.audit(30)]
        assert "rollout-resume" in actions
    finally:
        await again.close()


async def test_a_restart_whose_candidate_does_not_come_back_aborts(tmp_path):
    settings = fake_settings(tmp_path, **{**FAST, "rollout_step_s": 30})
    eng = await loaded_engine(settings, ("v1", {}), ("v2", {}), active="v1")
    try:
        await eng.start_rollout("v2", steps=[10, 100], actor="alice")
    finally:
        await eng.close()
    # v2's model breaks while the app is down: it fails to start, so nobody could watch its canary.
    (settings.model_roots[0] / "v2" / "fake.json").write_text('{"exit_at_start": true}')
    again = Engine(fake_settings(tmp_path, **{**FAST, "restart_backoff_max_s": 0.5, "startup_timeout_s": 3}))
    try:
        await again.start()
        assert await ended(again, 60) == "aborted"
        assert again.router.deployment.canary is None and again.router.deployment.active == "v1"
        assert "not both ready" in again.rollout_status().record.detail
    finally:
        with contextlib.suppress(Exception):
            await again.close()
