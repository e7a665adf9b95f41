"""The one object an operator (chat, tests, benchmarks, CLI) drives the engine through.

Every change of the deployment (load, unload, switch, rollback, canary, promote, abort, shadow) is
serialized by one lock, and its durable commit (deployment, desired states and audit row in
one transaction) and its in-memory flip run as one owned task that a cancelled caller cannot
split. Invariant: active, canary, standby and shadow always name versions that are loaded or
loading, and the shadow is never the active version. With a gate set configured, a switch or
promote to another version passes the quality gate (engine/gate.py) under that same lock.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Literal

from . import (
    checks,
    detect,
    documents,
    evalsets,
    evaluation,
    formats,
    gate,
    logfile,
    metrics,
    orphans,
    remote_address,
    rollout,
    sequence,
    terminology,
    translate,
    validation,
)
from .backend import Backend
from .cpu import CpuPool
from .detect import Detection
from .errors import BatonError, Conflict, GateRefused, InvalidArgument, NotFound, NotReady
from .evalsets import EvalRow, EvalSet, EvalSetInfo
from .evaluation import Evaluation, OnProgress, Outcome
from .languages import CODES, NAMES
from .livestats import LiveStats, Sample
from .memory import SHARED as MEMORY_SHARED
from .memory import Entry as MemoryEntry
from .memory import Match as MemoryMatch
from .memory import Memory, NewEntry, Origin, best_fuzzy, read_tmx, write_tmx
from .notices import Notices
from .pool import Pool
from .replicas import Replicas, ReplicaView
from .rollout import Rollouts, RolloutState, RolloutView
from .router import Route, RouteInfo, Router, WaitInfo
from .settings import Settings
from .shadow import ShadowRunner, ShadowStats
from .states import LOADING, Desired, State
from .store import AUDIT_ACTION_MAX, AUDIT_ACTOR_MAX, Change, Store
from .supervisor import Supervisor
from .templates import Capability
from .terminology import Term
from .translate import (
    BackendFailed,
    BackendRequest,
    Chunk,
    CompletionRequest,
    Limits,
    Restart,
    TranslationRequest,
    TranslationResult,
)
from .types import DEFAULT_TEMPLATE, AuditEvent, Deployment, RolloutRecord, Sampling, VersionSpec

log = logging.getLogger("baton.engine")
# A detected language at least this sure, and the same as the target: the text needs no translation.
SAME_LANGUAGE_CONFIDENCE = 0.5
MEMORY = "memory"  # what an answer from translation memory names as its version


@dataclass(frozen=True)
class VersionStatus:
    name: str
    state: str  # a backend state, or "registered" when no process exists
    desired: str  # serving / standby / unloaded
    role: str  # active / canary N% / standby / "" (idle)
    pid: int | None
    port: int | None
    uptime_s: float | None
    in_flight: int
    served: int
    errors: int
    restarts: int
    reason: str
    last_line: str
    gave_up: bool = False  # failed to start, and nothing will retry it: fix the recipe and /load again
    url: str | None = None  # a remote version's server (it has no pid or port)
    checked: int = 0  # live answers whose text was checked (engine/checks.py), in memory since the start
    flagged: dict[str, int] = field(default_factory=dict)  # of those, how many each check flagged


@dataclass(frozen=True)
class Status:
    deployment: Deployment
    versions: list[VersionStatus]
    shadow: ShadowStats | None = None
    replicas: list[ReplicaView] = field(default_factory=list)  # on Postgres: every replica's heartbeat

    def version(self, name: str) -> VersionStatus | None:
        return next((v for v in self.versions if v.name == name), None)


@dataclass(frozen=True)
class Health:
    """Answered from memory: can anything serve right now?"""

    status: Literal["ok", "degraded", "unavailable"]
    deployment: Deployment
    states: dict[str, str]
    detail: str  # why the active version is not serving, in a sentence; "" when it is
    replica: str = ""  # which replica answers (BATON_REPLICA_ID)

    @property
    def serving(self) -> bool:
        return self.status != "unavailable"


Phase = Literal["loading", "ready", "failed", "gone"]


@dataclass(frozen=True)
class Progress:
    """One step of a version's load, as `Engine.watch` streams it."""

    name: str
    phase: Phase
    elapsed_s: float
    version: VersionStatus | None

    @property
    def done(self) -> bool:
        return self.phase != "loading"


def _from_memory(req: TranslationRequest, entry: MemoryEntry, detected: Detection | None) -> TranslationResult:
    """The answer a memory entry gives: no model was asked."""
    return TranslationResult(version=MEMORY, role="memory", text=entry.target, ttft_ms=0.0, total_ms=0.0,
                             prompt_tokens=0, completion_tokens=0, finish_reason="stop", served_by="",
                             source_lang=req.source_lang, target_lang=req.target_lang, detected=detected,
                             terms=req.terms, memory=entry.provenance())


def _with_reference(context: str, ref: MemoryMatch | None) -> str:
    if ref is None:
        return context
    line = f"A similar text translated before: {ref.entry.source} => {ref.entry.target}"
    return f"{context}\n{line}" if context else line


def _with_cap(sampling: Sampling, max_tokens: int | None) -> Sampling:
    return sampling if max_tokens is None else replace(sampling, max_tokens=validation.check_max_tokens(max_tokens))


def _role(d: Deployment, name: str) -> str:
    role = ("active" if name == d.active else f"canary {d.canary_percent}%" if name == d.canary else
            "standby" if name == d.previous else "")
    if name == d.shadow:  # a standby or the canary may shadow the active version's answers too
        role = ", ".join(filter(None, (role, f"shadow {d.shadow_percent}%")))
    return role


def _desired_for(d: Deployment, name: str) -> Desired:
    return Desired.SERVING if name in (d.active, d.canary) else Desired.STANDBY


def _forced(args: dict[str, object], force: bool) -> dict[str, object]:
    """A forced change says so in its audit arguments."""
    return {**args, "force": True} if force else args


async def _discard(_: str) -> None:
    """Evaluation answers are read whole, not streamed."""


class Engine:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.store = Store(self.settings.db_url)
        self.pool = Pool(self.settings)
        self.supervisor = Supervisor(self.settings, self.store, self.pool)
        self.router = Router(self.pool, self.settings.request_wait_s)
        self._lock = asyncio.Lock()  # one deployment change at a time, whoever asks
        self._limits = Limits(self.settings.first_token_timeout_s, self.settings.between_tokens_timeout_s)
        self.cpu = CpuPool(self.settings.cpu_workers, self.settings.cpu_per_user)  # documents, scoring
        self.live = LiveStats()  # routed answers, votes and shadow comparisons, per version
        self.memory = Memory(self.store.engine)  # translation memory: approved answers, exact and fuzzy
        self.notices = Notices()  # what admins must hear at once (a rollout's decisions)
        self.rollouts = Rollouts(self)
        self._not_run_here: set[str] = set()  # local versions this replica has said it does not run
        self.shadows = ShadowRunner(self.router, self.live, self._limits, self.settings.shadow_max_in_flight,
                                    self.supervisor.own)
        self.replicas = Replicas(self.settings, self.store, lambda: self.router.deployment.generation, self.follow,
                                 self.rollouts.claim_if_orphaned, self.supervisor.own)

    # life ------------------------------------------------------------------
    async def start(self) -> Deployment:
        """Create/upgrade the schema (every table: the admin stores' and the chat history's too), end
        orphans, and bring back every version the operator wants loaded (serving and standby alike),
        in the background."""
        await asyncio.to_thread(self.settings.data_dir.mkdir, parents=True, exist_ok=True)
        await self.store.migrate()
        killed = await orphans.reap(self.store, self.settings.replica_id)
        if killed:
            log.warning("ended %d orphaned backend processes: %s", len(killed), killed)
        await self.supervisor.start()
        dep = await self.store.get_deployment()
        self.router.deployment = dep
        wanted = await self.store.desired_states()
        for spec in await self.store.list_versions():
            desired = wanted.get(spec.name)
            # A database from before desired states: the versions the deployment names come back.
            if desired is None and spec.name in (dep.active, dep.canary, dep.previous):
                desired = _desired_for(dep, spec.name).value
            if Desired.loaded(desired) and self._runs(spec):
                self._start_backend(spec, _desired_for(dep, spec.name))
        for name in (dep.active, dep.canary, dep.previous, dep.shadow):
            if name and self.pool.get(name) is None:
                log.error("the deployment names %s, which is not registered or not wanted loaded here", name)
        await self.rollouts.resume()
        await self.replicas.start()
        return dep

    def _runs(self, spec: VersionSpec) -> bool:
        """Whether this replica serves `spec`: a remote version always; a local one only where
        BATON_RUN_LOCAL_VERSIONS lets it start vLLM processes."""
        if spec.remote or self.settings.run_local_versions:
            return True
        if spec.name not in self._not_run_here:  # once: every followed change asks again
            self._not_run_here.add(spec.name)
            log.warning("version %s is local and this replica runs no processes (BATON_RUN_LOCAL_VERSIONS=false): "
                        "it is not served here", spec.name)
        return False

    async def follow(self) -> bool:
        """Apply what another replica committed: the deployment and the versions it wants loaded.
        False when this replica already serves the newest generation."""
        async with self._lock:
            return await self._catch_up()

    async def _catch_up(self) -> bool:
        """`follow` under the lock the caller holds."""
        dep = await self.store.get_deployment()
        if dep.generation <= self.router.deployment.generation:
            return False
        wanted = await self.store.desired_states()
        specs = {spec.name: spec for spec in await self.store.list_versions()}
        for name, b in list(self.pool.backends.items()):
            if b.desired is Desired.UNLOADED:
                continue
            want = wanted.get(name)
            if Desired.loaded(want):
                b.desired = Desired(want)
                if b.gave_up and name in specs:  # loaded again elsewhere after its start failed
                    b.spec = specs[name]
                    self.supervisor.launch(b)
            else:  # unloaded through another replica: stop routing to it and let it drain here
                b.desired = Desired.UNLOADED
                self.supervisor.interrupt(b)
                self.supervisor.own(self._retired(b), f"retire-{name}")
        self._start_wanted(wanted, specs)
        self.router.deployment = dep  # the flip, as in _commit
        latest = await self.store.latest_rollout()
        if latest is not None:
            self.rollouts.adopt(latest)
        log.info("replica %s follows generation %d: active=%s canary=%s:%d%%", self.replicas.id, dep.generation,
                 dep.active, dep.canary, dep.canary_percent)
        return True

    def _start_wanted(self, wanted: Mapping[str, str | None], specs: Mapping[str, VersionSpec]) -> None:
        """Start every version the database wants loaded that has no backend here."""
        for name, want in wanted.items():
            spec = specs.get(name)
            if Desired.loaded(want) and spec is not None and self.pool.get(name) is None and self._runs(spec):
                self._start_backend(spec, Desired(want))

    async def _retired(self, b: Backend) -> None:
        """Retire a version another replica unloaded; if it was loaded again meanwhile (its old
        backend still draining here then), start it once the old one is gone."""
        await self.supervisor.retired(b)
        async with self._lock:
            specs = {spec.name: spec for spec in await self.store.list_versions()}
            self._start_wanted(await self.store.desired_states(), specs)

    async def close(self) -> None:
        """Stop every backend. What the operator wanted stays persisted for the next start."""
        await self.replicas.close()
        await self.shadows.close()
        await self.rollouts.close()
        await self.supervisor.close()
        await self.store.close()
        self.cpu.close()

    # versions --------------------------------------------------------------
    async def register(
        self,
        name: str,
        model_path: str | Path | None = None,
        *,
        url: str | None = None,
        api_key_env: str | None = None,
        flags: list[str] | tuple[str, ...] = (),
        prompt_template: str | None = None,
        templates: Mapping[str, str] | None = None,
        interpreter: str | Path | None = None,
        sampling: Sampling | None = None,
        max_tokens: int | None = None,
        served_name: str | None = None,
        on_wrong_language: str | None = None,
        notes: str = "",
        actor: str = "system",
    ) -> VersionSpec:
        """Validate and save a version's recipe. Nothing is started. `max_tokens` overrides the
        cap of the given (or already saved) sampling; `templates` (by capability) replace the saved
        ones when given. With `url` instead of a model path, the version is remote: served by a
        server that runs elsewhere, whose API key (if any) is read from the variable `api_key_env`."""
        args: dict[str, object] = {"name": name, "model_path": str(model_path) if model_path else None,
                                   "flags": list(flags)}
        if url is not None:  # the variable's name only: the key never reaches the audit
            args |= {"url": validation.shown_url(url), "api_key_env": api_key_env}
        async with self._refusals_audited(actor, "register", args):
            validation.check_name(name)
            remote = self._remote_recipe(url, api_key_env, model_path, flags, interpreter)
            if remote is not None:  # a lookup may take seconds: not while switches wait for the lock
                await remote_address.refuse_unallowed(remote[0], validation.shown_url(str(url)),
                                                      self.settings.allowed_remote)
            async with self._lock:
                existing = await self.store.get_version(name)
                backend = self.pool.get(name)
                if backend is not None and backend.state is not State.FAILED:
                    raise Conflict(f"Version '{name}' is {backend.state.value}; its recipe cannot change now.",
                                   f"/unload {name} first, or pick a new name.")
                template = prompt_template or (existing.prompt_template if existing else None)
                spec = VersionSpec(
                    name=name,
                    model_path=None if remote else await asyncio.to_thread(validation.check_model_path, str(model_path),
                                                                            self.settings),
                    served_name=validation.check_name(served_name) if served_name else name,
                    flags=validation.check_flags(list(flags), self.settings),
                    interpreter=validation.check_interpreter(interpreter, self.settings),
                    prompt_template=validation.check_template(template) if template else DEFAULT_TEMPLATE,
                    templates=validation.check_templates(templates if templates is not None
                                                         else existing.templates if existing else {}),
                    sampling=_with_cap(sampling or (existing.sampling if existing else Sampling()), max_tokens),
                    notes=notes,
                    created_by=actor,
                    url=remote[0] if remote else None,
                    api_key_env=remote[1] if remote else None,
                    on_wrong_language=validation.check_wrong_language_policy(
                        on_wrong_language or (existing.on_wrong_language if existing else "flag")),
                )
                await self.store.save_version(spec, (actor, "register", args))
                if backend is not None:
                    backend.spec = spec  # a failed version starts with its new recipe at the next /load
                return spec

    def _remote_recipe(self, url: str | None, api_key_env: str | None, model_path: str | Path | None,
                       flags: Sequence[str], interpreter: str | Path | None) -> tuple[str, str | None] | None:
        """A remote version's checked (URL, key variable), or None for a local version. Judged before
        anything is sent anywhere."""
        if url is None:
            if api_key_env:
                raise InvalidArgument("--api-key-env is for a remote version only.",
                                      "Give --url URL too, or drop --api-key-env (Baton makes a local version's key).")
            if not model_path:
                raise InvalidArgument("A version needs a model path or a URL.",
                                      "Give MODEL_PATH (a local version) or --url URL (a server that runs elsewhere).")
            return None
        if model_path or flags or interpreter:
            raise InvalidArgument("A remote version takes no model path, vLLM flags or interpreter: its server runs "
                                  "elsewhere and Baton never starts it.",
                                  "Give only --url (with --served-model and --api-key-env if needed); set the model "
                                  "and flags where that server runs.")
        return (validation.check_remote_url(url, self.settings),
                validation.check_key_env(api_key_env, self.settings) if api_key_env else None)

    async def load(self, name: str, *, actor: str = "system") -> VersionStatus:
        """Start the registered version in the background; returns at once. A version already
        loading or loaded is joined; a failed one is started again."""
        async with self._refusals_audited(actor, "load", {"name": name}), self._lock:
            spec = await self._spec(name)
            if not spec.remote and not self.settings.run_local_versions:
                raise Conflict(f"Version '{name}' is local, and this replica starts no vLLM process "
                               "(BATON_RUN_LOCAL_VERSIONS=false).",
                               f"Serve it from an engine built for clusters and /load {name} --url URL instead.")
            b = self.pool.get(name)
            if b is not None and (b.desired is Desired.UNLOADED or b.state in (State.DRAINING, State.STOPPING)):
                raise Conflict(f"Version '{name}' is being unloaded ({b.state.value}).",
                               f"Wait until /status no longer lists it, then /load {name} again.")
            if b is not None and b.state is not State.FAILED:
                await self._commit(actor, "load", {"name": name}, f"already {b.state.value}: joined", {})
                return self._status_of(b, "")
            d = self.router.deployment
            desired = _desired_for(d, name)
            detail = "starting again after a failure" if b is not None else "starting"
            if b is None and not spec.remote:
                self.pool.free_port()  # refuse before the commit when no port is left

            def start() -> Backend:
                if b is not None:
                    b.spec = spec
                    self.supervisor.launch(b)
                    return b
                return self._start_backend(spec, desired)

            started = await self._commit(actor, "load", {"name": name}, detail, {name: desired}, then=start)
            assert started is not None  # what `start` returned
            return self._status_of(started, "")

    async def wait_loaded(self, name: str) -> VersionStatus:
        """Wait until the version is ready; raise NotReady with the reason if its start failed
        (or it was unloaded meanwhile)."""
        b = self.pool.require(name)
        while True:
            if b.state is State.READY:
                return self._status_of(b, "")
            if self.pool.get(name) is not b or b.desired is Desired.UNLOADED:
                raise NotReady(f"Version '{name}' was unloaded while loading.", f"/load {name} again.")
            if b.gave_up:
                where = f"the server at {b.url}" if b.spec.remote else f"/logs {name}"
                raise NotReady(f"Version '{name}' failed to start: {b.reason}",
                               f"Check {where}, fix the recipe and /load {name} again.")
            await b.cell.wait_change(5)

    async def unload(self, name: str, *, actor: str = "system") -> bool:
        """Stop sending it traffic, drain (bounded), stop. Refused for the active or canary
        version. True if every request it had finished first."""
        async with self._refusals_audited(actor, "unload", {"name": name}):
            async with self._lock:
                validation.check_name(name)
                d = self.router.deployment
                if name in (d.active, d.canary):
                    raise Conflict(f"Version '{name}' is serving as {_role(d, name)}.",
                                   "Switch traffic to another version (or /canary abort) before unloading it.")
                b = self.pool.require(name)
                if b.desired is Desired.UNLOADED:
                    raise Conflict(f"Version '{name}' is already being unloaded.", "Watch /status.")
                new = replace(d, previous=None) if d.previous == name else d
                if d.shadow == name:
                    new = replace(new, shadow=None, shadow_percent=0)

                def flip() -> Backend:
                    b.desired = Desired.UNLOADED
                    self.supervisor.interrupt(b)
                    return b

                await self._commit(actor, "unload", {"name": name}, "draining", {name: Desired.UNLOADED}, new, flip)
            return await self.supervisor.retired(b)

    # deployment ------------------------------------------------------------
    def _ready(self, name: str) -> Backend:
        backend = self.pool.get(validation.check_name(name))
        if backend is None:
            raise NotReady(f"Version '{name}' is not loaded.", f"Load it first: /load {name} MODEL_PATH.")
        if backend.desired is Desired.UNLOADED:
            raise NotReady(f"Version '{name}' is being unloaded.", f"/load {name} again once it has stopped.")
        if backend.state is not State.READY:
            why = f": {backend.reason}" if backend.reason else "."
            raise NotReady(f"Version '{name}' is {backend.state.value}{why}",
                           "Only a ready version can receive traffic; check /status and try again when it is ready.")
        return backend

    async def _deploy(self, actor: str, action: str, args: dict[str, object],
                      change: Callable[[Deployment], Deployment],
                      rollout_for: Callable[[Deployment], RolloutRecord] | None = None,
                      note: Callable[[], str] | None = None, *, gate: Literal["active", "canary"] | None = None,
                      force: bool = False) -> Deployment:
        """One deployment change under the lock; `rollout_for` gives the rollout state committed with it.
        `gate`: the version the change puts in that role (a new active version; a rollout's canary,
        which ends as the active one) passes the quality gate first against the active version,
        unless `force` (then the audit says what the gate would have refused)."""
        async with self._refusals_audited(actor, action, args), self._lock:
            if self.replicas.enabled:  # decide on what the other replicas committed, not on a stale copy
                await self._catch_up()
            old = self.router.deployment
            record = rollout_for(old) if rollout_for else None
            new = change(old)
            if new.shadow == new.active:  # a shadow that becomes active has nothing left to shadow
                new = replace(new, shadow=None, shadow_percent=0)
            detail = (f"active={new.active} previous={new.previous} canary={new.canary}:{new.canary_percent}% "
                      f"shadow={new.shadow}:{new.shadow_percent}%")
            candidate = None if gate is None else new.active if gate == "active" else new.canary
            if candidate and self.settings.gate_set and old.active and candidate != old.active:
                refusal = await self._gate(candidate, old.active, self.settings.gate_set)
                if refusal is not None and not force:
                    raise refusal
                if refusal is not None:
                    detail = f"forced past the gate: {refusal.what} {detail}"
            desired = {n: _desired_for(new, n) for n, b in self.pool.backends.items()
                       if b.desired is not Desired.UNLOADED}
            await self._commit(actor, action, args, f"{detail}; {note()}" if note else detail, desired, new,
                               rollout=record)
            metrics.SWITCHES.labels(action).inc()
            return self.router.deployment

    async def _commit(self, actor: str, action: str, args: dict[str, object], detail: str,
                      desired: dict[str, Desired], deployment: Deployment | None = None,
                      then: Callable[[], Backend] | None = None, rollout: RolloutRecord | None = None,
                      ) -> Backend | None:
        """Write the change durably, then apply it in memory, as one task the caller's
        cancellation cannot split. If the write fails nothing is applied."""
        dep = deployment or self.router.deployment
        change = Change(dep, {n: d.value for n, d in desired.items()}, actor, action, args, detail, rollout)

        async def commit_and_flip() -> Backend | None:
            saved = await self.store.save_change(change)
            self.router.deployment = saved.deployment  # the flip: one assignment
            self.replicas.moved()
            if saved.rollout is not None:
                self.rollouts.adopt(saved.rollout)
            for name, want in desired.items():
                if (b := self.pool.get(name)) is not None and b.desired is not Desired.UNLOADED:
                    b.desired = want
            return then() if then else None

        return await asyncio.shield(asyncio.ensure_future(commit_and_flip()))

    async def switch(self, name: str, *, force: bool = False, actor: str = "system") -> Deployment:
        """All new requests to `name`. Gated (see engine/gate.py) unless `force`."""
        def change(d: Deployment) -> Deployment:
            if name == d.active:
                raise Conflict(f"Version '{name}' is already active.", "Nothing to do.")
            self._ready(name)
            canary = None if d.canary == name else d.canary
            return replace(d, active=name, previous=d.active, canary=canary,
                           canary_percent=d.canary_percent if canary else 0)

        return await self._deploy(actor, "switch", _forced({"name": name}, force), change, gate="active", force=force)

    async def bootstrap(self, name: str, *, actor: str = "system") -> Deployment:
        """On a fresh install, name the version to serve; `start()` loads it. No switch rule is
        bent: nothing serves yet, and requests wait until that version is ready."""
        await self._spec(name)

        def change(d: Deployment) -> Deployment:
            if d.active:
                raise Conflict(f"Version '{d.active}' is already active.", f"Use /switch {name} instead.")
            return replace(d, active=name)

        async with self._refusals_audited(actor, "bootstrap", {"name": name}), self._lock:
            new = change(self.router.deployment)
            await self._commit(actor, "bootstrap", {"name": name}, f"active={name}", {name: Desired.SERVING}, new)
            return new

    async def rollback(self, *, actor: str = "system") -> Deployment:
        """Back to the previous version. Never gated: it is the way back to the version that served."""
        def change(d: Deployment) -> Deployment:
            if not d.previous:
                raise Conflict("There is no previous version to roll back to.", "Use /switch NAME instead.")
            self._ready(d.previous)
            return replace(d, active=d.previous, previous=d.active)

        return await self._deploy(actor, "rollback", {}, change)

    async def canary(self, name: str, percent: int, *, actor: str = "system") -> Deployment:
        self._not_during_rollout("canary")

        def change(d: Deployment) -> Deployment:
            if not 1 <= percent <= 99:
                raise InvalidArgument(f"Canary percent must be 1-99, not {percent}.",
                                      "Use /switch to send all traffic.")
            if name == d.active:
                raise Conflict(f"Version '{name}' is already active.", "Pick another version for the canary.")
            if not d.active:
                raise Conflict("No version is active yet.",
                               "Switch to a version first; a canary splits traffic with it.")
            self._ready(name)
            return replace(d, canary=name, canary_percent=percent)

        return await self._deploy(actor, "canary", {"name": name, "percent": percent}, change)

    def _promoted(self, d: Deployment) -> Deployment:
        if not d.canary:
            raise Conflict("There is no canary to promote.", "Start one with /canary NAME PERCENT.")
        self._ready(d.canary)
        return replace(d, active=d.canary, previous=d.active, canary=None, canary_percent=0)

    async def promote(self, *, force: bool = False, actor: str = "system") -> Deployment:
        """The canary becomes the active version. Gated (see engine/gate.py) unless `force`."""
        self._not_during_rollout("promote")
        return await self._deploy(actor, "promote", _forced({}, force), self._promoted, gate="active", force=force)

    async def abort_canary(self, *, actor: str = "system") -> Deployment:
        self._not_during_rollout("canary-abort")

        def change(d: Deployment) -> Deployment:
            if not d.canary:
                raise Conflict("There is no canary to abort.", "Nothing to do.")
            return replace(d, canary=None, canary_percent=0)

        return await self._deploy(actor, "canary-abort", {}, change)

    # rollouts --------------------------------------------------------------
    def _not_during_rollout(self, action: str) -> None:
        if (r := self.rollouts.running) is not None:
            raise Conflict(f"A rollout of {r.candidate} owns the canary (step {r.step + 1} of {len(r.plan.steps)}).",
                           f"Use /rollout abort to stop it before /{action.replace('-', ' ')}.")

    async def start_rollout(self, name: str, *, steps: list[int] | None = None, step_s: float | None = None,
                            step_requests: int | None = None, actor: str = "system") -> RolloutView:
        """Ramp `name` up as the canary through the plan's steps, judged between steps on live
        traffic; the last step promotes it. Returns at once; the engine's runner drives it."""
        s = self.settings
        args: dict[str, object] = {"name": name, "steps": steps, "step_s": step_s, "step_requests": step_requests}
        async with self._refusals_audited(actor, "rollout-start", args):
            plan = rollout.check_plan(steps or s.rollout_steps, s.rollout_step_s if step_s is None else step_s,
                                      s.rollout_step_requests if step_requests is None else step_requests)

        def change(d: Deployment) -> Deployment:
            if (r := self.rollouts.running) is not None:
                raise Conflict(f"A rollout of {r.candidate} is already running.",
                               "/rollout abort it first, or wait for it to end (/rollout status).")
            if not d.active:
                raise Conflict("No version is active yet.", "Switch to a version first; a rollout replaces it.")
            if name == d.active:
                raise Conflict(f"Version '{name}' is already active.", "Roll out another version.")
            if d.canary:
                raise Conflict(f"{d.canary} is a canary already.", "/canary abort first: the rollout sets the canary.")
            self._ready(name)
            return replace(d, canary=name, canary_percent=plan.steps[0])

        def record(d: Deployment) -> RolloutRecord:
            assert d.active is not None  # checked by `change`
            return RolloutRecord(None, name, d.active, plan, RolloutState.RUNNING.value, 0, actor,
                                 runner=self.settings.replica_id)

        args = {"name": name, "steps": list(plan.steps), "step_s": plan.step_s, "step_requests": plan.step_requests}
        # Gated at the start as well as at the promote: a rollout that could never end is refused up front.
        try:
            await self._deploy(actor, "rollout-start", args, change, record, gate="canary")
        except GateRefused as exc:  # a rollout has no --force: its promote would be refused all the same
            raise GateRefused(exc.what, f"Run /eval {name} (and /eval of the active version) first; to override "
                                        "the gate, use /canary and /promote --force by hand.") from None
        self.rollouts.watch()
        view = self.rollouts.view()
        assert view is not None
        await self.notices.publish(f"▶️ {actor} started a rollout of `{name}`: {plan.steps[0]} % of conversations "
                                   f"now, then {', '.join(f'{p} %' for p in plan.steps[1:])}.")
        return view

    async def _rollout_change(self, actor: str, action: str, rollout_id: int | None,
                              then: Callable[[RolloutRecord], RolloutRecord], *, percent: int | None = None,
                              promote: bool = False, abort: bool = False, note: str | None = None) -> None:
        """The running rollout's next state (`then` of the current one) with the traffic it sets,
        in one commit; refused unless that rollout is still the running one (checked and written
        under the lock, so an admin's abort and the runner's step cannot both win). The audit
        says `note`, or the newest analysis's reasons."""
        new: RolloutRecord | None = None

        def record(_: Deployment) -> RolloutRecord:
            nonlocal new
            cur = self.rollouts.running
            if cur is None or cur.id != rollout_id:
                raise Conflict("That rollout is no longer running.", "See /rollout status.")
            new = then(cur)
            return new

        def change(d: Deployment) -> Deployment:
            assert new is not None  # `record` runs first
            if promote:
                if d.canary != new.candidate or d.active != new.baseline:
                    raise Conflict("The deployment changed during the rollout.", "See /status.")
                return self._promoted(d)
            if percent is not None:
                return rollout.deployment_for(d, new, percent)
            return replace(d, canary=None, canary_percent=0) if abort and d.canary == new.candidate else d

        def said() -> str:
            assert new is not None
            return note or ("; ".join(new.timeline[-1]["reasons"]) if new.timeline else new.detail)

        cur = self.rollouts.running
        args: dict[str, object] = {"name": cur.candidate if cur else None, "step": cur.step + 1 if cur else None}
        # The last step makes the candidate active: the quality gate has its say, as for /promote.
        await self._deploy(actor, action, args, change, record, said, gate="active" if promote else None)

    async def abort_rollout(self, *, actor: str = "system") -> RolloutView:
        """Stop the running rollout and move its traffic back to the active version at once."""
        async with self._refusals_audited(actor, "rollout-abort", {}):
            r = self.rollouts.running
            if r is None:
                raise Conflict("No rollout is running.", "See /rollout status for the last one.")
        await self._rollout_change(actor, "rollout-abort", r.id, lambda cur: rollout.moved(
            cur, RolloutState.RUNNING, RolloutState.ABORTED, detail=f"aborted by {actor}"), abort=True)
        await self.notices.publish(f"🛑 {actor} aborted the rollout of `{r.candidate}` at step {r.step + 1}: "
                                   f"`{r.baseline}` answers every request again.")
        view = self.rollouts.view()
        assert view is not None
        return view

    def rollout_status(self) -> RolloutView | None:
        """The running rollout (or the last one), with the current step's numbers so far."""
        return self.rollouts.view()

    # shadow ----------------------------------------------------------------
    async def shadow(self, name: str, percent: int, *, actor: str = "system") -> Deployment:
        """Copy `percent` % of routed requests to a ready version, whose answers nobody sees but the
        statistics. A new shadow replaces the previous one and starts with fresh statistics."""
        fresh = False

        def change(d: Deployment) -> Deployment:
            nonlocal fresh
            if not 1 <= percent <= 100:
                raise InvalidArgument(f"Shadow percent must be 1-100, not {percent}.",
                                      "Give the share of requests to copy, e.g. /shadow NAME 10.")
            if not d.active:
                raise Conflict("No version is active yet.",
                               "Switch to a version first; a shadow is compared with its answers.")
            if name == d.active:
                raise Conflict(f"Version '{name}' is active: it cannot shadow itself.",
                               "Shadow another ready version.")
            self._ready(name)
            fresh = d.shadow != name  # only a new percent: the statistics go on
            return replace(d, shadow=name, shadow_percent=percent)

        d = await self._deploy(actor, "shadow", {"name": name, "percent": percent}, change)
        if fresh:
            self.shadows.started(name)
        return d

    async def stop_shadow(self, *, actor: str = "system") -> Deployment:
        def change(d: Deployment) -> Deployment:
            if not d.shadow:
                raise Conflict("There is no shadow to stop.", "Nothing to do.")
            return replace(d, shadow=None, shadow_percent=0)

        return await self._deploy(actor, "shadow-off", {}, change)

    # quality ----------------------------------------------------------------
    async def evaluate(self, name: str, set_name: str | None = None, *, actor: str = "system",
                       on_progress: OnProgress | None = None) -> Evaluation:
        """Translate every row of a set with version `name` (pinned: its own backend, outside live
        routing), score it and store the result with its audit row. `set_name=None`: the gate set.
        Cancelled, it stores nothing."""
        set_name = set_name or self.settings.gate_set
        args = {"name": name, "set": set_name}
        async with self._refusals_audited(actor, "eval", args):
            if set_name is None:
                raise InvalidArgument("Name the evaluation set: no gate set is configured (BATON_GATE_SET).",
                                      f"Use /eval {name} SET; /eval alone lists the sets.")
            spec = await self._spec(name)
            evset = await evalsets.load(set_name, self.settings)
            self._ready(name)
            outcomes = await evaluation.run(evset.rows, self._eval_row(name), self.settings.eval_concurrency,
                                            on_progress)
            if (await self._spec(name)).created_at != spec.created_at:
                raise Conflict(f"The recipe of '{name}' was saved again during its evaluation; nothing was stored.",
                               f"Run /eval {name} again.")
            result = replace(await self.cpu.run(actor, partial(evaluation.summarize, name, evset, outcomes)),
                             by=actor)
            if result.errors:
                log.warning("evaluation of %s on %s: %d of %d rows failed", name, set_name, result.errors, result.rows)
            detail = (f"chrF {result.chrf:.1f} BLEU {result.overall.bleu:.1f} exact {result.overall.exact:.0%} "
                      f"on {result.rows} rows, {result.errors} errors; set sha256 {evset.checksum[:12]}")
            return await self.store.save_evaluation(result, "eval", args, detail)

    def _eval_row(self, name: str) -> Callable[[EvalRow], Awaitable[Outcome]]:
        async def one(row: EvalRow) -> Outcome:
            req = TranslationRequest(row.source, NAMES[row.tgt_lang], NAMES[row.src_lang],
                                     conversation_id=f"eval:{name}", version=name)
            try:
                result = await self.translate(req, _discard)
            except BatonError as exc:  # a failed row scores as an empty answer, and is counted
                log.info("evaluation of %s: line %d failed: %s", name, row.line, exc)
                return Outcome("", None)
            return Outcome(result.text, result.total_ms, tuple(f.check for f in result.flags))

        return one

    async def evaluations(self, version: str | None = None, set_name: str | None = None,
                          limit: int = 20) -> list[Evaluation]:
        """Stored evaluations, newest first."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument(f"Cannot show {limit} evaluations.", "Ask for 1-1000.")
        return await self.store.list_evaluations(
            validation.check_name(version) if version else None,
            evalsets.check_set_name(set_name) if set_name else None, limit=limit)

    async def eval_sets(self) -> list[EvalSetInfo]:
        """The sets under BATON_EVAL_ROOTS, each with its rows and checksum or what is wrong with it."""
        return await evalsets.available(self.settings)

    async def scoreboard(self) -> dict[str, Evaluation]:
        """Each version's latest evaluation on the gate set, or else on any set."""
        latest = await self.store.latest_evaluations()
        if self.settings.gate_set:
            latest.update(await self.store.latest_evaluations(self.settings.gate_set))
        return latest

    async def _gate(self, candidate: str, active: str, set_name: str) -> GateRefused | None:
        """The gate's refusal of making `candidate` active in place of `active`, or None."""
        try:
            evset = await evalsets.load(set_name, self.settings)
        except BatonError as exc:
            return GateRefused(f"The quality gate cannot check {candidate}: the gate set (BATON_GATE_SET) is "
                               f"unusable. {exc.what}", f"{exc.fix} Or add --force to override (audited as forced).")
        return gate.check(await self._standing(candidate, evset), await self._standing(active, evset),
                          set_name, self.settings.gate_max_drop)

    async def _standing(self, name: str, evset: EvalSet) -> gate.Standing:
        spec = await self._spec(name)
        same = await self.store.list_evaluations(name, evset.name, evset.checksum, limit=1)
        latest = same or await self.store.list_evaluations(name, evset.name, limit=1)
        return gate.standing(name, evset, same[0] if same else None, latest[0] if latest else None,
                             spec.created_at)

    # observation -----------------------------------------------------------
    def health(self) -> Health:
        """From memory only: a locked database does not make a serving Baton look down."""
        d = self.router.deployment
        states = {name: b.state.value for name, b in self.pool.backends.items()}
        serving = [n for n in (d.active, d.canary, d.previous) if self.router.usable(n)]
        status: Literal["ok", "degraded", "unavailable"] = (
            "ok" if d.active in serving else "degraded" if serving else "unavailable")
        return Health(status, d, states, "" if status == "ok" else self.router.describe_wait(), self.replicas.id)

    async def status(self) -> Status:
        d = self.router.deployment
        rows: list[VersionStatus] = []
        wanted = await self.store.desired_states()
        for spec in await self.store.list_versions():
            b = self.pool.get(spec.name)
            if b is None:
                rows.append(VersionStatus(spec.name, "registered", wanted.get(spec.name) or Desired.UNLOADED.value,
                                          _role(d, spec.name), None, None, None, 0, 0, 0, 0, "", "", url=spec.url))
                continue
            last = await asyncio.to_thread(logfile.tail, b.log_path, 1)
            rows.append(self._status_of(b, last[0] if last else ""))
        return Status(d, rows, self.shadows.stats(d), await self.replicas.view())

    def _status_of(self, b: Backend, last_line: str) -> VersionStatus:
        s = b.snapshot()
        uptime = time.monotonic() - s.ready_at if s.ready_at and s.state in (State.READY, State.DRAINING) else None
        live = self.live.sample(s.name)
        return VersionStatus(s.name, s.state.value, s.desired.value, _role(self.router.deployment, s.name), s.pid,
                             s.port, uptime, s.in_flight, s.served, s.errors, s.restarts, s.reason, last_line,
                             b.gave_up, b.spec.url, live.checked, dict(live.flagged))

    async def watch(self, name: str, interval_s: float = 1.0) -> AsyncIterator[Progress]:
        """A version's load as it happens: an item about every `interval_s` and at once on each
        change of state, ending with one whose phase is ready, failed or gone."""
        start = time.monotonic()
        b = self.pool.require(name)
        while True:
            current = self.pool.get(name)
            if current is not b or b.desired is Desired.UNLOADED:
                yield Progress(name, "gone", time.monotonic() - start, None)
                return
            last = await asyncio.to_thread(logfile.tail, b.log_path, 1)
            status = self._status_of(b, last[0] if last else "")
            phase: Phase = ("ready" if b.state is State.READY else
                            "failed" if b.gave_up else
                            "loading" if b.state in LOADING or b.state in (State.STOPPED, State.FAILED) else "gone")
            yield Progress(name, phase, time.monotonic() - start, status)
            if phase != "loading":
                return
            await b.cell.wait_change(interval_s)

    async def logs(self, name: str, n: int = 50) -> list[str]:
        if not 1 <= n <= 5000:
            raise InvalidArgument(f"Cannot show {n} lines.", "Ask for 1-5000 lines.")
        spec = await self._spec(name)
        if spec.remote:
            raise NotFound(f"'{name}' is a remote version: its server runs at {spec.url}, outside Baton, so there is "
                           "no local log.", f"Read the log where that server runs; /status shows why {name} failed, "
                           "if it did.")
        return await asyncio.to_thread(logfile.tail, self.settings.log_dir / f"{name}.log", n)

    async def record(self, actor: str, action: str, args: Mapping[str, object], outcome: str, detail: str = "") -> int:
        """An audit row for an action taken outside the engine (accounts, denied commands); its id."""
        return await self.store.audit(actor, action, args, outcome, detail)

    async def amend_record(self, row_id: int, detail: str) -> None:
        """A new detail for an audit row written by `record` (a burst of refusals counted in one row)."""
        await self.store.amend_audit(row_id, detail)

    def feedback(self, version: str, up: bool | None, answer: str = "") -> None:
        """A user's thumbs up or down (None: taken back) on an answer `version` gave: a metric of votes
        cast, and live data for rollouts, where only the latest vote on each `answer` counts."""
        if self.pool.get(version) is None:  # an old answer from a version long gone: keep the metric's labels bounded
            return
        if up is not None:
            metrics.FEEDBACK.labels(version, "up" if up else "down").inc()
        self.live.voted(version, up, answer)

    def shadow_stats(self) -> ShadowStats | None:
        """The shadow, if there is one, and how its answers compared since it started."""
        return self.shadows.stats(self.router.deployment)

    def live_sample(self, version: str, since: float = 0.0) -> Sample:
        """What live traffic said about `version` since `since` (the engine's monotonic clock)."""
        return self.live.sample(version, since)

    async def audit(self, n: int = 20, action: str | None = None, actor: str | None = None) -> list[AuditEvent]:
        """The last `n` audit events, of one action and one actor when given."""
        if not 1 <= n <= 1000:
            raise InvalidArgument(f"Cannot show {n} audit events.", "Ask for 1-1000.")
        for what, value, longest in (("action", action, AUDIT_ACTION_MAX), ("actor", actor, AUDIT_ACTOR_MAX)):
            if value is not None and not 1 <= len(value) <= longest:
                raise InvalidArgument(f"An audit {what} to filter by is 1-{longest} characters long.",
                                      f"Copy the {what} as /audit shows it.")
        return await self.store.list_audit(n, action, actor)

    # translation memory -----------------------------------------------------
    async def memory_add(self, owner: str, entries: Sequence[NewEntry], *, actor: str,
                         origin: Origin = "typed") -> tuple[int, int]:
        """Add entries to `owner`'s memory ("" the shared one: audited), all or none: (added, replaced)."""
        args: dict[str, object] = {"entries": len(entries), "origin": origin,
                                   "source": entries[0].source[:80] if len(entries) == 1 else None}
        async with self._audited_if_shared(owner, actor, "tm-add", args):
            return await self.memory.add(owner, entries, by=actor, origin=origin)

    async def memory_remove(self, owner: str, source: str, tgt_lang: str | None, *, actor: str) -> int:
        async with self._audited_if_shared(owner, actor, "tm-remove", {"source": source[:80], "lang": tgt_lang}):
            return await self.memory.remove(owner, source, tgt_lang)

    async def memory_import(self, owner: str, data: bytes, *, actor: str) -> tuple[int, int]:
        """A TMX file into `owner`'s memory, whole or not at all, read in the CPU pool."""
        async with self._audited_if_shared(owner, actor, "tm-import", {"bytes": len(data)}):
            entries = await self.cpu.run(actor, partial(read_tmx, data))
            return await self.memory.add(owner, entries, by=actor, origin="imported")

    async def memory_export(self, owner: str) -> bytes:
        entries = await self.memory.entries(owner)
        return await self.cpu.run(owner or "memory", partial(write_tmx, entries))

    @contextlib.asynccontextmanager
    async def _audited_if_shared(self, owner: str, actor: str, action: str,
                                 args: dict[str, object]) -> AsyncIterator[None]:
        """A change of the shared memory leaves an audit row, accepted or refused; a user's own does not."""
        if owner != MEMORY_SHARED:
            yield
            return
        async with self._refusals_audited(actor, action, args):
            yield
        await self.store.audit(actor, action, args, "ok", "")

    # requests --------------------------------------------------------------
    async def translate(
        self,
        req: TranslationRequest,
        on_token: Callable[[str], Awaitable[None]],
        on_wait: Callable[[WaitInfo], Awaitable[None]] | None = None,
        on_route: Callable[[RouteInfo], Awaitable[None]] | None = None,
        on_restart: Callable[[Restart], Awaitable[None]] | None = None,
    ) -> TranslationResult:
        """Stream one translation, with each version's own prompt templates. `on_route` hears which
        version answers before any token. When a backend dies, hangs or stalls during the answer,
        the answer is translated again from the start on a ready version (`on_restart` hears it
        first, to discard the partial text): an answer is never stitched from two versions.

        An "auto" source is detected; glossary terms that occur in the text go to a terminology
        template; formatting (code, links, tags, placeholders) goes to a formatted template, or is
        kept verbatim while the text between is translated piece by piece by the same version.
        The result says what was used, what the version lacked, and which terms or formatting
        did not survive."""
        translate.validate(req)
        req, detected = await self._prepared(req, req.text)
        req = req.about(req.text)
        pair = CODES.get(req.source_lang, ""), CODES.get(req.target_lang, "")
        remembered = reference = None
        if req.use_memory and req.version is None:  # an evaluation measures the version itself
            remembered = await self.memory.exact(req.user, *pair, req.text)
            if remembered is not None:
                await on_token(remembered.target)
                return _from_memory(req, remembered, detected)
            reference = await self._reference(req, *pair)
        pieces = None if formats.is_plain(req.text) else formats.split(req.text)

        async def on_chunk(chunk: Chunk) -> None:
            if chunk.text:
                await on_token(chunk.text)

        async def run(route: Route) -> TranslationResult:
            spec = route.backend.spec
            # A close entry from memory is a reference for a version whose contextual template can take it.
            referred = reference is not None and Capability.CONTEXTUAL.value in spec.templates
            this = replace(req, context=_with_reference(req.context, reference)) if referred else req
            chosen = translate.choice(spec, this)
            if pieces is None or chosen.capability is Capability.FORMATTED:
                result = await translate.stream(route, translate.for_translation(this)(spec), on_chunk, self._limits)
            else:
                items = [this.about(p.text) if p.translate else p.text for p in pieces]
                result = await sequence.run(route, items, self._limits, on_text=on_token)
            result = replace(result, capability=chosen.capability.value, note=chosen.note,
                             reference=reference.entry.provenance() + f", {reference.score:.0f} % alike"
                             if referred and reference is not None else "")
            return await self._checked(req, result, formatted=pieces is not None)

        result = await self._answer(req.conversation_id, req.version, run, on_wait, on_route, on_restart,
                                    shadow=translate.for_translation(req) if pieces is None else None)
        return replace(result, source_lang=req.source_lang, target_lang=req.target_lang, detected=detected,
                       terms=req.terms)

    async def _reference(self, req: TranslationRequest, src_lang: str, tgt_lang: str) -> MemoryMatch | None:
        """The closest entry of the user's and the shared memory for this text, if close enough."""
        candidates = await self.memory.candidates(req.user, src_lang, tgt_lang)
        if not candidates:
            return None
        return await self.cpu.run(req.user or "memory", partial(best_fuzzy, req.text, candidates))

    async def _checked(self, req: TranslationRequest, result: TranslationResult, *,
                       formatted: bool) -> TranslationResult:
        """`result` with what the answer checks found (engine/checks.py), computed in the CPU pool."""
        def run_checks() -> tuple[tuple[Term, ...], tuple[str, ...], tuple[checks.Flag, ...]]:
            missing = terminology.missing(result.text, req.terms)
            lost = tuple(formats.lost(req.text, result.text)) if formatted else ()
            return missing, lost, checks.check(req.text, result.text, CODES.get(req.source_lang, ""),
                                               CODES.get(req.target_lang, ""), missing_terms=missing, format_lost=lost)

        missing, lost, flags = await self.cpu.run(req.conversation_id or "answers", run_checks)
        return replace(result, missing_terms=missing, format_lost=lost, flags=flags, checked=True)

    async def open_document(self, filename: str, data: bytes, *, user: str) -> documents.Document:
        """A document's segments to translate, within the size limits: parsed in the CPU pool, in
        turn with `user`'s other documents; its size is checked before any parsing."""
        doc = await self.cpu.run(user, partial(documents.read_document, filename, data,
                                               max_bytes=self.settings.document_max_bytes,
                                               max_segments=self.settings.document_max_segments))
        for i, segment in enumerate(doc.segments, 1):
            try:
                translate.validate(TranslationRequest(segment, "-"))
            except InvalidArgument as exc:
                raise InvalidArgument(f"Segment {i} of {filename}: {exc.what}", exc.fix) from None
        return doc

    async def translate_document(
        self,
        doc: documents.Document,
        req: TranslationRequest,
        done: list[str | None],
        on_progress: Callable[[int, int], Awaitable[None]],
        on_route: Callable[[RouteInfo], Awaitable[None]] | None = None,
        on_restart: Callable[[Restart], Awaitable[None]] | None = None,
        on_wait: Callable[[WaitInfo], Awaitable[None]] | None = None,
    ) -> TranslationResult:
        """Translate every segment of `doc` with one version, from the first to the last, even when
        an admin switches halfway: the document holds its version's lease until it is done. Each
        translated segment lands in `done` (its index), so a caller stopped halfway keeps what is
        done. A version that fails mid-document has it translated again, whole, by another."""
        segments = list(doc.segments)
        if not segments:
            raise InvalidArgument(f"{doc.filename} has no text to translate.", "Send a document with some text in it.")
        req, detected = await self._prepared(req, "\n".join(segments[:40]))
        items = [req.about(s) for s in segments]  # each segment with the terms that occur in it

        async def on_done(i: int, text: str) -> None:
            done[i] = text
            await on_progress(sum(t is not None for t in done), len(segments))

        async def run(route: Route) -> TranslationResult:
            done[:] = [None] * len(segments)
            await on_progress(0, len(segments))
            with route.backend.traffic.lease():  # an unload drains the document, as it drains an answer
                result = await sequence.run(route, items, self._limits, on_done=on_done)
            chosen = translate.choice(route.backend.spec, items[0])
            return replace(result, capability=chosen.capability.value, note=chosen.note)

        result = await self._answer(req.conversation_id, req.version, run, on_wait, on_route, on_restart)
        expected = tuple({t: None for it in items for t in it.terms})  # each term once, in order
        missing = {t for it, text in zip(items, done, strict=True) for t in terminology.missing(text or "", it.terms)}
        missing_terms = tuple(t for t in expected if t in missing)
        # The language checks read the document's start, as its detection did.
        flags = await self.cpu.run(req.conversation_id or "answers", partial(
            checks.check, "\n".join(segments[:40]), "\n".join(t or "" for t in done[:40]),
            CODES.get(req.source_lang, ""), CODES.get(req.target_lang, ""), missing_terms=missing_terms))
        return replace(result, source_lang=req.source_lang, target_lang=req.target_lang, detected=detected,
                       terms=expected, missing_terms=missing_terms, flags=flags, checked=True)

    async def rebuild_document(self, doc: documents.Document, done: Sequence[str | None],
                               filename: str, *, user: str) -> tuple[bytes, str]:
        """The translated file (an untranslated or empty segment keeps its original words), and
        how its structure differs from the original's ("" when it is the same); built in the CPU
        pool, in turn with `user`'s other documents."""
        def build() -> tuple[bytes, str]:
            data = doc.rebuild([t or None for t in done])
            before, after = doc.structure(), documents.structure_of(filename, data)
            differs = [f"{k}: {before.get(k, 0)} → {after.get(k, 0)}" for k in sorted({*before, *after})
                       if before.get(k, 0) != after.get(k, 0)]
            return data, ", ".join(differs)

        return await self.cpu.run(user, build)

    async def _prepared(self, req: TranslationRequest, sample: str) -> tuple[TranslationRequest, Detection | None]:
        """The request with its source language detected (from `sample`) when it was "auto". Text
        already in the target language is refused with a hint: translating it could only give it back."""
        detected = None
        if req.source_lang in ("", "auto"):
            detected = await asyncio.to_thread(detect.detect, sample)
            if detected is not None:
                name = NAMES[detected.code]
                if name == req.target_lang and detected.confidence >= SAME_LANGUAGE_CONFIDENCE:
                    raise InvalidArgument(
                        f"This text already reads as {name} ({detected.confidence:.0%} sure), the language "
                        f"it would be translated into.",
                        "Choose another target language, or name the source language if it is not "
                        f"{name}.")
                req = replace(req, source_lang=name)
        return req, detected

    async def complete(
        self,
        req: CompletionRequest,
        on_chunk: Callable[[Chunk], Awaitable[None]],
        on_route: Callable[[RouteInfo], Awaitable[None]] | None = None,
        on_restart: Callable[[Restart], Awaitable[None]] | None = None,
    ) -> TranslationResult:
        """A client's own completion or chat request, through the same router, leases, stall
        deadlines and failover as a translation. Without `on_restart` the caller cannot take back
        what it relayed, so a backend failing after the first text raises BackendFailed instead
        of answering again. A pinned `req.version` gets no failover."""
        request_for = translate.for_completion(req)

        async def run(route: Route) -> TranslationResult:
            return await translate.stream(route, request_for(route.backend.spec), on_chunk, self._limits)

        return await self._answer(req.conversation_id, req.version, run, None, on_route, on_restart,
                                  shadow=request_for)

    async def _answer(
        self,
        conversation_id: str,
        pinned: str | None,
        run: Callable[[Route], Awaitable[TranslationResult]],
        on_wait: Callable[[WaitInfo], Awaitable[None]] | None,
        on_route: Callable[[RouteInfo], Awaitable[None]] | None,
        on_restart: Callable[[Restart], Awaitable[None]] | None,
        shadow: Callable[[VersionSpec], BackendRequest] | None = None,
    ) -> TranslationResult:
        """`run` on a route, and again on another version when the backend fails (up to
        request_attempts). `shadow` builds the request a shadow version would get."""
        failed: set[tuple[str, int]] = set()
        note = ""
        attempts = 1 if pinned else self.settings.request_attempts
        second: Route | None = None  # another version, to translate a wrong-language answer again
        for attempt in range(1, attempts + 1):
            route: Route = (second if second is not None else self.router.pinned(pinned) if pinned else
                            await self.router.acquire(conversation_id, on_wait, failed))
            if on_route:
                await on_route(route.info)
            try:
                result = await run(route)
            except BackendFailed as exc:
                if not pinned:
                    self.live.answered(route.backend.name, ok=False)
                if exc.refused or attempt == attempts or (exc.partial and on_restart is None):
                    raise
                failed.add((route.backend.name, route.backend.generation))
                note = f"{exc.what} The answer was translated again from the start."
                metrics.RETRIES.labels(route.backend.name).inc()
                if exc.partial and on_restart:
                    await on_restart(Restart(route.backend.name, exc.what))
                continue
            if not pinned:  # an empty answer has no first token to time
                self.live.answered(result.version, ok=True, ttft_s=result.ttft_ms / 1000 if result.text else None,
                                   checked=result.checked, flags=(f.check for f in result.flags))
                if result.checked:
                    metrics.ANSWERS_CHECKED.labels(result.version).inc()
                for flag in result.flags:
                    metrics.ANSWER_FLAGS.labels(result.version, flag.check).inc()
                if second is None and attempt < attempts and (second := self._second_opinion(route, result, failed)):
                    failed.add((route.backend.name, route.backend.generation))
                    why = next(f.message for f in result.flags if f.check == "wrong_language")
                    note = f"{why} It was translated again by {second.backend.name}."
                    if on_restart:
                        await on_restart(Restart(route.backend.name, why))
                    continue
                if shadow is not None:
                    self.shadows.offer(result, shadow)
            return replace(result, retranslated=note) if note else result
        raise AssertionError("unreachable: the last attempt returns or raises")

    # helpers ---------------------------------------------------------------
    def _second_opinion(self, route: Route, result: TranslationResult, avoid: set[tuple[str, int]]) -> Route | None:
        """Another ready version to translate a wrong-language answer again, when the recipe of the
        version that gave it says so (on_wrong_language); None keeps the answer, flagged."""
        if route.backend.spec.on_wrong_language != "retranslate" or not any(
                f.check == "wrong_language" for f in result.flags):
            return None
        found = self.router.pick(f"second-opinion:{route.backend.name}",
                                 {*avoid, (route.backend.name, route.backend.generation)})
        # Its answer says why it came from there (the retranslation note), not that the first one was down.
        return replace(found, role="standby", failover_note="") if found is not None else None

    def _start_backend(self, spec: VersionSpec, desired: Desired) -> Backend:
        b = self.pool.add(spec)
        b.desired = desired
        self.supervisor.launch(b)
        return b

    async def _spec(self, name: str) -> VersionSpec:
        spec = await self.store.get_version(validation.check_name(name))
        if spec is None:
            raise NotFound(f"No version named '{name}' is registered.",
                           f"Register and load it with /load {name} MODEL_PATH.")
        return spec

    @contextlib.asynccontextmanager
    async def _refusals_audited(self, actor: str, action: str, args: Mapping[str, object]) -> AsyncIterator[None]:
        """A refused or failed action gets its own audit row with the reason; an accepted one
        wrote its row in the transaction that made the change."""
        try:
            yield
        except Exception as exc:
            outcome = "refused" if isinstance(exc, BatonError) else "error"
            try:
                await self.store.audit(actor, action, args, outcome, str(exc))
            except BatonError:  # the database may be what failed; the caller sees `exc`
                log.warning("could not audit the refused %s: the database is unavailable", action)
            raise
