"""Progressive delivery: a canary that ramps through steps, judged on live traffic between them.

The rollout is a persisted state machine (running -> passed | aborted). Every step change is
committed in the same transaction as the canary share it sets (Engine._deploy with a rollout
record), so a crash can never leave the database saying one thing and the traffic another.
One owned task (the runner) watches the current step: when the step's time or request count is
reached it compares the candidate with the active version on what live traffic said since the
step began (engine/livestats.py) and advances, promotes (after the last step) or aborts, moving
traffic back at once. After an app restart the runner resumes the step it was on, with a fresh
window, once both versions are ready again; if they do not come back it aborts. Traffic is
never split with nobody watching: while the runner waits, a canary that is not ready gets no
traffic, and a runner that fails aborts.

With several replicas exactly one drives a rollout: the record names its runner, and every
change the runner commits first checks that it still does (under the deployment's generation
compare-and-swap). When the runner's replica goes silent (no heartbeat) or leaves, the first
replica to notice claims the rollout in one such change and resumes it; a runner that comes back
from a hang finds the rollout claimed and stops without touching it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal

from .errors import BatonError, Conflict, InvalidArgument
from .livestats import Sample
from .settings import Settings
from .states import State
from .types import Deployment, RolloutPlan, RolloutRecord

if TYPE_CHECKING:
    from .facade import Engine

log = logging.getLogger("baton.rollout")
ROLLOUT = "rollout"


class RolloutState(str, Enum):  # noqa: UP042 - StrEnum changes str() of a member
    RUNNING = "running"
    PASSED = "passed"  # every step passed: the candidate was promoted
    ABORTED = "aborted"  # a check failed, an admin aborted, or it could not go on: traffic moved back


TRANSITIONS: dict[RolloutState, frozenset[RolloutState]] = {
    RolloutState.RUNNING: frozenset({RolloutState.PASSED, RolloutState.ABORTED}),
    RolloutState.PASSED: frozenset(),
    RolloutState.ABORTED: frozenset(),
}


def moved(r: RolloutRecord, expected: RolloutState, new: RolloutState, **changes: Any) -> RolloutRecord:
    """`r` in its next state: refused unless it is in `expected` and the move is allowed (the
    caller holds the deployment lock, so check and write cannot be interleaved)."""
    if r.state != expected.value or new not in TRANSITIONS[expected] | {expected}:
        raise Conflict(f"The rollout of {r.candidate} is {r.state}, not {expected.value}.", "See /rollout status.")
    ended_at = datetime.now(UTC) if new is not RolloutState.RUNNING else r.ended_at
    return replace(r, state=new.value, ended_at=ended_at, **changes)


def check_plan(steps: list[int] | tuple[int, ...], step_s: float, step_requests: int) -> RolloutPlan:
    if len(steps) < 2 or steps[-1] != 100 or any(not 1 <= p <= 100 for p in steps) or \
            any(a >= b for a, b in zip(steps, steps[1:], strict=False)):
        raise InvalidArgument(f"Steps {','.join(map(str, steps))} are not a ramp.",
                              "Give increasing percents from 1 to 100 that end with 100, e.g. --steps 5,25,50,100.")
    if not 1 <= step_s <= 86_400:
        raise InvalidArgument(f"A step of {step_s:g} s is out of range.", "Give --step-s between 1 and 86400.")
    if not 0 <= step_requests <= 1_000_000:
        raise InvalidArgument(f"{step_requests} requests per step is out of range.",
                              "Give --step-requests between 0 (time only) and 1000000.")
    return RolloutPlan(tuple(steps), float(step_s), int(step_requests))


# analysis ---------------------------------------------------------------------
Verdict = Literal["pass", "fail", "wait"]


@dataclass(frozen=True)
class Policy:
    """What a step must show to pass; from BATON_ROLLOUT_* settings."""

    min_requests: int
    max_error_increase: float  # canary error rate minus the active version's
    max_ttft_ratio: float  # canary TTFT p95 over the active version's...
    ttft_slack_ms: float  # ...unless they differ by less than this (small numbers are noise)
    max_thumbs_down_increase: float
    max_wrong_language_increase: float  # share of checked answers not in the target language
    min_shadow_agreement: float  # 0: shadow agreement is shown but not judged
    step_max_s: float  # longest a step waits for min_requests canary answers

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(s.rollout_min_requests, s.rollout_max_error_increase, s.rollout_max_ttft_ratio,
                   s.rollout_ttft_slack_ms, s.rollout_max_thumbs_down_increase,
                   s.rollout_max_wrong_language_increase, s.rollout_min_shadow_agreement,
                   s.rollout_step_max_s)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.0%}"


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{x:.0f} ms"


def judge(canary: Sample, active: Sample, p: Policy) -> tuple[Verdict, list[str]]:
    """Compare the canary with the active version on the same window of live traffic. Every
    check says what it saw, passed or not, so the admin sees why."""
    if canary.answers < p.min_requests:
        return "wait", [f"{canary.answers} canary answers so far; {p.min_requests} are needed to judge"]
    failed: list[str] = []
    notes: list[str] = []
    base_err = active.error_rate or 0.0
    err = canary.error_rate or 0.0
    line = f"error rate {_pct(err)} against {_pct(active.error_rate)}"
    (failed if err - base_err > p.max_error_increase else notes).append(
        line + f" (at most +{p.max_error_increase:.0%} allowed)")
    if canary.ttft_p95_ms is not None and active.ttft_p95_ms is not None:
        slow = (canary.ttft_p95_ms > active.ttft_p95_ms * p.max_ttft_ratio
                and canary.ttft_p95_ms - active.ttft_p95_ms > p.ttft_slack_ms)
        (failed if slow else notes).append(
            f"first token p95 {_ms(canary.ttft_p95_ms)} against {_ms(active.ttft_p95_ms)} "
            f"(at most {p.max_ttft_ratio:g}x allowed)")
    down, base_down = canary.thumbs_down_rate or 0.0, active.thumbs_down_rate or 0.0
    (failed if down - base_down > p.max_thumbs_down_increase else notes).append(
        f"thumbs down {canary.votes_down}/{canary.answers} answers against {active.votes_down}/{active.answers} "
        f"(at most +{p.max_thumbs_down_increase:.0%} allowed)")
    # Only translations are checked (a client's own completion is not): with none on the canary, nothing to judge.
    wrong, base_wrong = canary.flag_rate("wrong_language"), active.flag_rate("wrong_language") or 0.0
    (failed if wrong is not None and wrong - base_wrong > p.max_wrong_language_increase else notes).append(
        f"not in the target language {canary.flagged.get('wrong_language', 0)}/{canary.checked} answers against "
        f"{active.flagged.get('wrong_language', 0)}/{active.checked} (at most +{p.max_wrong_language_increase:.0%} "
        "allowed)")
    if canary.shadow_agreement is not None:
        low = p.min_shadow_agreement > 0 and canary.shadow_agreement < p.min_shadow_agreement
        (failed if low else notes).append(f"shadow agreement chrF {canary.shadow_agreement:.1f} over "
                                          f"{canary.shadowed} samples" +
                                          (f" (at least {p.min_shadow_agreement:g} required)"
                                           if p.min_shadow_agreement else ""))
    return ("fail", failed + notes) if failed else ("pass", notes)


@dataclass(frozen=True)
class Analysis:
    step: int
    percent: int
    elapsed_s: float
    canary: Sample
    active: Sample
    verdict: Verdict
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"at": datetime.now(UTC).isoformat(timespec="seconds"), "step": self.step, "percent": self.percent,
                "elapsed_s": round(self.elapsed_s, 1), "canary": self.canary.numbers(),
                "active": self.active.numbers(), "verdict": self.verdict, "reasons": list(self.reasons)}


# what the chat and the API see -----------------------------------------------------
@dataclass(frozen=True)
class RolloutView:
    record: RolloutRecord
    percent: int  # the canary share of the current step
    step_elapsed_s: float | None  # None when not running
    canary: Sample | None  # the current step's window so far
    active: Sample | None
    next_decision: str  # what happens next and when, in a sentence
    runner: str | None = None  # the replica that drives it; None on one box


Notify = Callable[[str], Awaitable[None]]


class LostRollout(Conflict):
    """The rollout is driven by another replica now: this one's runner stops."""


# the runner -------------------------------------------------------------------------
class Rollouts:
    """The current (or last) rollout and the task that drives it. Every change of its state
    goes through Engine._deploy."""

    def __init__(self, engine: Engine, tick_s: float = 0.5) -> None:
        self.engine = engine
        self.tick_s = tick_s
        self.current: RolloutRecord | None = None
        self._task: asyncio.Task[None] | None = None
        self._step_started = 0.0  # live-stats clock at the start of the current step's window
        self._wake = asyncio.Event()

    @property
    def running(self) -> RolloutRecord | None:
        r = self.current
        return r if r is not None and r.state == RolloutState.RUNNING.value else None

    def adopt(self, r: RolloutRecord) -> None:
        """The in-memory flip, made with the deployment's (Engine._commit)."""
        self.current = r
        self._wake.set()

    @property
    def me(self) -> str:
        return self.engine.settings.replica_id

    def _driving(self) -> bool:
        return self._task is not None and not self._task.done()

    # life -------------------------------------------------------------------------------
    async def resume(self) -> None:
        """At engine start: drive the rollout that was running when the app stopped, unless a
        live replica drives it."""
        self.current = await self.engine.store.latest_rollout()
        await self.claim_if_orphaned()

    async def claim_if_orphaned(self) -> None:
        """Drive the running rollout if nobody does: at start, and at each of this replica's
        heartbeats (engine/replicas.py)."""
        r = self.running
        if r is None or self._driving():
            return
        why = await self._orphaned(r)
        if why is None:
            return
        try:
            await self.engine._rollout_change(ROLLOUT, "rollout-resume", r.id, lambda cur: self._claimed(cur, r),
                                              note=why)
        except Conflict as exc:  # another replica claimed it first, or it ended meanwhile
            log.info("replica %s did not claim the rollout of %s: %s", self.me, r.candidate, exc.what)
            return
        await self._say(f"🔁 {why[0].upper()}{why[1:]}: the rollout of `{r.candidate}` resumes at step "
                        f"{r.step + 1} ({r.plan.steps[r.step]} %) once both versions are ready.")
        self.watch(resumed=True)

    async def _orphaned(self, r: RolloutRecord) -> str | None:
        """Why nobody drives `r` (None: its runner is alive and driving it)."""
        if r.runner in ("", self.me) or not self.engine.replicas.enabled:  # one box: nobody else could
            return "the app restarted"
        age = await self.engine.replicas.silence(r.runner)
        if age is None:
            return None
        gone = "has left" if age == float("inf") else f"is silent (no heartbeat for {age:.0f} s)"
        return f"replica {self.me} took over from replica {r.runner}, which {gone}"

    def _claimed(self, cur: RolloutRecord, seen: RolloutRecord) -> RolloutRecord:
        if cur.runner != seen.runner:
            raise Conflict(f"Replica {cur.runner} claimed the rollout of {cur.candidate} first.", "Nothing to do.")
        return replace(cur, runner=self.me)

    def _held(self, cur: RolloutRecord) -> RolloutRecord:
        """`cur`, if this replica still drives it; a runner that hung past its heartbeats finds
        it claimed by another and must not move it."""
        if cur.runner != self.me:
            raise LostRollout(f"Replica {cur.runner} drives the rollout of {cur.candidate} now.",
                              "This replica stops driving it.")
        return cur

    def _let_go(self, exc: LostRollout) -> None:
        log.warning("replica %s stops driving the rollout: %s", self.me, exc.what)

    def watch(self, *, resumed: bool = False) -> None:
        self._new_window()  # again once both versions are ready, when resumed
        self._task = self.engine.supervisor.own(self._guarded(resumed), f"rollout-{self.current and self.current.id}")

    async def close(self) -> None:
        """The app is going away: stop watching. The rollout stays `running` in the database and
        resumes at the next start; until then no process serves anything."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # the loop ---------------------------------------------------------------------------
    async def _guarded(self, resumed: bool) -> None:
        try:
            await self._run(resumed)
        except asyncio.CancelledError:
            raise
        except LostRollout as exc:
            self._let_go(exc)
        except Exception as exc:  # noqa: BLE001 - a runner that cannot go on must not leave traffic split
            log.exception("the rollout runner failed")
            await self.abort_by_runner(f"the rollout's watcher failed ({type(exc).__name__}: {exc})")

    async def _run(self, resumed: bool) -> None:
        if resumed and not await self._both_ready():
            return
        self._new_window()
        while (r := self.running) is not None:
            self._held(r)
            if (why := self._interfered(r)) is not None:
                await self.abort_by_runner(why, touch_traffic=False)
                return
            elapsed = self._step_elapsed()
            canary, active = self._samples(r)
            due = elapsed >= r.plan.step_s or (r.plan.step_requests and canary.answers >= r.plan.step_requests)
            if not due:
                await self._nap()
                continue
            policy = Policy.from_settings(self.engine.settings)
            verdict, reasons = judge(canary, active, policy)
            analysis = Analysis(r.step, r.plan.steps[r.step], elapsed, canary, active, verdict, tuple(reasons))
            if verdict == "wait":
                if elapsed < policy.step_max_s:
                    await self._nap()
                    continue
                analysis = replace(analysis, verdict="fail", reasons=(
                    f"too little traffic to judge: {canary.answers} canary answers in {elapsed:.0f} s, "
                    f"{policy.min_requests} needed (BATON_ROLLOUT_MIN_REQUESTS)",))
            if analysis.verdict == "fail":
                await self.abort_by_runner("a check failed: " + "; ".join(analysis.reasons[:1]), analysis)
                return
            await self._advance(r, analysis)

    def _samples(self, r: RolloutRecord) -> tuple[Sample, Sample]:
        live = self.engine.live
        return live.sample(r.candidate, self._step_started), live.sample(r.baseline, self._step_started)

    def _new_window(self) -> None:
        self._step_started = self.engine.live.now()

    def _step_elapsed(self) -> float:
        return self.engine.live.now() - self._step_started

    async def _nap(self) -> None:
        self._wake.clear()
        try:
            await asyncio.wait_for(self._wake.wait(), self.tick_s)
        except TimeoutError:
            pass

    def _interfered(self, r: RolloutRecord) -> str | None:
        d = self.engine.router.deployment
        if d.active != r.baseline or d.canary != r.candidate:
            return (f"the deployment was changed outside the rollout (active {d.active}, canary {d.canary}); "
                    "the traffic is left as that change set it")
        return None

    async def _both_ready(self) -> bool:
        """After a restart both versions start again; wait for them (bounded by the start-up timeout)."""
        r = self.running
        assert r is not None
        deadline = time.monotonic() + self.engine.settings.startup_timeout_s + 30
        while time.monotonic() < deadline:
            if (cur := self.running) is None or cur.id != r.id:  # ended (a followed change adopts a copy)
                return False
            states = {n: (b.state if (b := self.engine.pool.get(n)) else None) for n in (r.candidate, r.baseline)}
            if all(s is State.READY for s in states.values()):
                return True
            if any(s is None or (b := self.engine.pool.get(n)) is not None and b.gave_up
                   for n, s in states.items()):
                break
            await self.engine.pool.wait_change(1.0)
        await self.abort_by_runner(f"after the restart, {r.candidate} and {r.baseline} were not both ready in time")
        return False

    # state changes ----------------------------------------------------------------------
    async def _advance(self, r: RolloutRecord, analysis: Analysis) -> None:
        timeline = (*r.timeline, analysis.as_dict())
        nxt = r.step + 1
        percent = r.plan.steps[nxt]
        numbers = "; ".join(analysis.reasons)
        if percent == 100:
            try:
                await self.engine._rollout_change(ROLLOUT, "rollout-promote", r.id, lambda cur: moved(
                    self._held(cur), RolloutState.RUNNING, RolloutState.PASSED, step=nxt, timeline=timeline,
                    detail=f"every step passed; promoted ({numbers})"), promote=True)
            except LostRollout:
                raise
            except BatonError as exc:  # e.g. the quality gate, or the candidate stopped being ready
                await self.abort_by_runner(f"the promote was refused: {exc}", analysis)
                return
            await self._say(f"✅ Rollout of `{r.candidate}` passed every step and is promoted: it now answers "
                            f"every request. Last analysis: {numbers}.")
            return
        await self.engine._rollout_change(ROLLOUT, "rollout-step", r.id, lambda cur: moved(
            self._held(cur), RolloutState.RUNNING, RolloutState.RUNNING, step=nxt, timeline=timeline), percent=percent)
        self._new_window()
        await self._say(f"📈 Rollout of `{r.candidate}`: step {nxt} passed ({numbers}). "
                        f"Now {percent} % of conversations, step {nxt + 1} of {len(r.plan.steps)}.")

    async def abort_by_runner(self, why: str, analysis: Analysis | None = None, *, touch_traffic: bool = True) -> None:
        r = self.running
        if r is None:
            return
        entry = (analysis.as_dict(),) if analysis else ()
        try:
            await self.engine._rollout_change(ROLLOUT, "rollout-abort", r.id, lambda cur: moved(
                self._held(cur), RolloutState.RUNNING, RolloutState.ABORTED, timeline=(*cur.timeline, *entry),
                detail=why), abort=touch_traffic)
        except LostRollout as exc:
            self._let_go(exc)
            return
        except BatonError as exc:
            log.error("could not abort the rollout of %s (%s): %s", r.candidate, why, exc)
            await self._say(f"⚠️ The rollout of `{r.candidate}` must stop ({why}) but could not: {exc}. "
                            "Check /status and run /canary abort.")
            return
        back = f"`{r.baseline}` answers every request again" if touch_traffic else "the traffic was not touched"
        await self._say(f"🛑 Rollout of `{r.candidate}` aborted at step {r.step + 1} ({r.plan.steps[r.step]} %): "
                        f"{why}. {back}.")

    async def _say(self, text: str) -> None:
        await self.engine.notices.publish(text)

    # views ------------------------------------------------------------------------------
    def view(self) -> RolloutView | None:
        r = self.current
        if r is None:
            return None
        percent = r.plan.steps[min(r.step, len(r.plan.steps) - 1)]
        runner = r.runner if self.engine.replicas.enabled else None
        if self.running is None:
            return RolloutView(r, percent, None, None, None, f"Ended ({r.state}): {r.detail}", runner)
        if runner is not None and runner != self.me:  # the step's window and numbers are the runner's
            return RolloutView(r, percent, None, None, None,
                               f"Replica {runner} judges each step on the traffic it serves; its /rollout status "
                               "has the step's numbers.", runner)
        elapsed = self._step_elapsed()
        canary, active = self._samples(r)
        left = max(0.0, r.plan.step_s - elapsed)
        by_count = f" or after {r.plan.step_requests} canary answers" if r.plan.step_requests else ""
        nxt = r.plan.steps[r.step + 1]
        then = "promote" if nxt == 100 else f"go to {nxt} %"
        need = Policy.from_settings(self.engine.settings).min_requests
        return RolloutView(r, percent, elapsed, canary, active,
                           f"Analysis in {left:.0f} s{by_count} (needs at least {need} canary answers): "
                           f"if it passes, {then}; if not, abort and move traffic back.", runner)


def deployment_for(d: Deployment, r: RolloutRecord, percent: int) -> Deployment:
    """The deployment of one step: the candidate as canary at `percent`."""
    if d.active != r.baseline:
        raise Conflict(f"The active version is {d.active}, not {r.baseline} as when the rollout began.",
                       "The rollout stops; start a new one if you still want it.")
    if d.canary not in (None, r.candidate):
        raise Conflict(f"{d.canary} is already the canary.", "/canary abort first, or wait for it to end.")
    return replace(d, canary=r.candidate, canary_percent=percent)
