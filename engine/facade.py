"""The one object an operator (chat, tests, benchmarks, CLI) drives the engine through."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path

from . import metrics, translate, validation
from .backend import Backend, Snapshot, State
from .errors import BatonError, Conflict, InvalidArgument, NotFound, NotReady, StoreUnavailable
from .pool import Pool
from .router import Route, Router, WaitInfo
from .settings import Settings
from .store import Store
from .translate import TranslationRequest, TranslationResult
from .types import DEFAULT_TEMPLATE, AuditEvent, Deployment, Sampling, VersionSpec

log = logging.getLogger("baton.engine")


@dataclass(frozen=True)
class VersionStatus:
    name: str
    state: str  # a backend state, or "registered" when no process exists
    role: str  # active / canary / standby / "" (idle)
    pid: int | None
    port: int | None
    uptime_s: float | None
    in_flight: int
    served: int
    errors: int
    restarts: int
    reason: str
    last_line: str


@dataclass(frozen=True)
class Status:
    deployment: Deployment
    versions: list[VersionStatus]

    def version(self, name: str) -> VersionStatus | None:
        return next((v for v in self.versions if v.name == name), None)


def _with_cap(sampling: Sampling, max_tokens: int | None) -> Sampling:
    return sampling if max_tokens is None else replace(sampling, max_tokens=validation.check_max_tokens(max_tokens))


def _role(d: Deployment, name: str) -> str:
    if name == d.active:
        return "active"
    if name == d.canary:
        return f"canary {d.canary_percent}%"
    if name == d.previous:
        return "standby"
    return ""


class Engine:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.store = Store(self.settings.db_url)
        self.pool = Pool(self.settings, self.store)
        self.router = Router(self.pool, self.settings.request_wait_s)
        self._deploy_lock = asyncio.Lock()  # serializes deployment changes (two admins at once)

    # life ------------------------------------------------------------------
    async def start(self) -> Deployment:
        """Create/upgrade the schema, end orphans, restore the deployment (loads in background)."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.store.create_schema()
        killed = await self.pool.reap_stale()
        if killed:
            log.warning("ended %d orphaned backend processes: %s", len(killed), killed)
        dep = await self.store.get_deployment()
        self.router.deployment = dep
        for name in dict.fromkeys(n for n in (dep.active, dep.canary) if n):
            spec = await self.store.get_version(name)
            if spec is None:
                log.error("deployment names %s but no such version is registered", name)
                continue
            self.pool.load(spec)
        return dep

    async def close(self) -> None:
        await self.pool.close()
        await self.store.close()

    # versions --------------------------------------------------------------
    async def register(
        self,
        name: str,
        model_path: str | Path,
        *,
        flags: list[str] | tuple[str, ...] = (),
        prompt_template: str | None = None,
        interpreter: str | Path | None = None,
        sampling: Sampling | None = None,
        max_tokens: int | None = None,
        served_name: str | None = None,
        notes: str = "",
        actor: str = "system",
    ) -> VersionSpec:
        """Validate and save a version's recipe. Nothing is started. `max_tokens` overrides the
        cap of the given (or already saved) sampling."""
        args = {"name": name, "model_path": str(model_path), "flags": list(flags)}
        async with self._audited(actor, "register", args):
            validation.check_name(name)
            existing = await self.store.get_version(name)
            backend = self.pool.get(name)
            if backend is not None and backend.state is not State.STOPPED:
                raise Conflict(f"Version '{name}' is {backend.state.value}; its recipe cannot change now.",
                               f"/unload {name} first, or pick a new name.")
            template = prompt_template or (existing.prompt_template if existing else None)
            spec = VersionSpec(
                name=name,
                model_path=validation.check_model_path(str(model_path), self.settings),
                served_name=validation.check_name(served_name) if served_name else name,
                flags=validation.check_flags(list(flags), self.settings),
                interpreter=validation.check_interpreter(interpreter, self.settings),
                prompt_template=validation.check_template(template) if template else DEFAULT_TEMPLATE,
                sampling=_with_cap(sampling or (existing.sampling if existing else Sampling()), max_tokens),
                notes=notes,
                created_by=actor,
            )
            await self.store.save_version(spec)
            return spec

    async def load(self, name: str, *, actor: str = "system") -> Snapshot:
        """Start the registered version in the background; returns at once."""
        async with self._audited(actor, "load", {"name": name}):
            spec = await self._spec(name)
            return self.pool.load(spec).snapshot()

    async def wait_loaded(self, name: str) -> Snapshot:
        return (await self.pool.wait_loaded(name)).snapshot()

    async def unload(self, name: str, *, actor: str = "system") -> bool:
        """Drain then stop. Refused for the active or canary version. True if fully drained."""
        async with self._audited(actor, "unload", {"name": name}):
            d = self.router.deployment
            if name in (d.active, d.canary):
                raise Conflict(f"Version '{name}' is serving as {_role(d, name)}.",
                               "Switch traffic to another version (or /canary abort) before unloading it.")
            self.pool.require(name)
            return await self.pool.unload(name)

    # deployment ------------------------------------------------------------
    def _ready(self, name: str) -> Backend:
        backend = self.pool.get(validation.check_name(name))
        if backend is None:
            raise NotReady(f"Version '{name}' is not loaded.", f"Load it first: /load {name} MODEL_PATH.")
        if backend.state is not State.READY:
            why = f": {backend.reason}" if backend.reason else "."
            raise NotReady(f"Version '{name}' is {backend.state.value}{why}",
                           "Only a ready version can receive traffic; check /status and try again when it is ready.")
        return backend

    async def _deploy(self, actor: str, action: str, args: dict, change: Callable[[Deployment], Deployment]) -> Deployment:
        """Validate, commit durably (deployment + audit in one transaction), then flip the pointer."""
        async with self._deploy_lock, self._audited(actor, action, args, committed=True):
            current = self.router.deployment
            new = change(current)
            detail = f"active={new.active} previous={new.previous} canary={new.canary}:{new.canary_percent}%"
            saved = await self.store.save_deployment(new, actor, audit=(action, args, detail))
            self.router.deployment = saved  # the flip: one assignment
            metrics.SWITCHES.labels(action).inc()
            return saved

    async def switch(self, name: str, *, actor: str = "system") -> Deployment:
        def change(d: Deployment) -> Deployment:
            if name == d.active:
                raise Conflict(f"Version '{name}' is already active.", "Nothing to do.")
            self._ready(name)
            canary = None if d.canary == name else d.canary
            return replace(d, active=name, previous=d.active, canary=canary, canary_percent=d.canary_percent if canary else 0)

        return await self._deploy(actor, "switch", {"name": name}, change)

    async def bootstrap(self, name: str, *, actor: str = "system") -> Deployment:
        """On a fresh install, name the version to serve; `start()` loads it. No switch rule is
        bent: nothing serves yet, and requests wait until that version is ready."""
        await self._spec(name)

        def change(d: Deployment) -> Deployment:
            if d.active:
                raise Conflict(f"Version '{d.active}' is already active.", f"Use /switch {name} instead.")
            return replace(d, active=name)

        return await self._deploy(actor, "bootstrap", {"name": name}, change)

    async def rollback(self, *, actor: str = "system") -> Deployment:
        def change(d: Deployment) -> Deployment:
            if not d.previous:
                raise Conflict("There is no previous version to roll back to.", "Use /switch NAME instead.")
            self._ready(d.previous)
            return replace(d, active=d.previous, previous=d.active)

        return await self._deploy(actor, "rollback", {}, change)

    async def canary(self, name: str, percent: int, *, actor: str = "system") -> Deployment:
        def change(d: Deployment) -> Deployment:
            if not 1 <= percent <= 99:
                raise InvalidArgument(f"Canary percent must be 1-99, not {percent}.", "Use /switch to send all traffic.")
            if name == d.active:
                raise Conflict(f"Version '{name}' is already active.", "Pick another version for the canary.")
            if not d.active:
                raise Conflict("No version is active yet.", "Switch to a version first; a canary splits traffic with it.")
            self._ready(name)
            return replace(d, canary=name, canary_percent=percent)

        return await self._deploy(actor, "canary", {"name": name, "percent": percent}, change)

    async def promote(self, *, actor: str = "system") -> Deployment:
        def change(d: Deployment) -> Deployment:
            if not d.canary:
                raise Conflict("There is no canary to promote.", "Start one with /canary NAME PERCENT.")
            self._ready(d.canary)
            return replace(d, active=d.canary, previous=d.active, canary=None, canary_percent=0)

        return await self._deploy(actor, "promote", {}, change)

    async def abort_canary(self, *, actor: str = "system") -> Deployment:
        def change(d: Deployment) -> Deployment:
            if not d.canary:
                raise Conflict("There is no canary to abort.", "Nothing to do.")
            return replace(d, canary=None, canary_percent=0)

        return await self._deploy(actor, "canary-abort", {}, change)

    # observation -----------------------------------------------------------
    async def status(self) -> Status:
        d = self.router.deployment
        now = time.monotonic()
        rows: list[VersionStatus] = []
        for spec in await self.store.list_versions():
            b = self.pool.get(spec.name)
            if b is None:
                rows.append(VersionStatus(spec.name, "registered", _role(d, spec.name), None, None, None, 0, 0, 0, 0, "", ""))
                continue
            s = b.snapshot()
            uptime = now - s.ready_at if s.ready_at and s.state in (State.READY, State.DRAINING) else None
            rows.append(VersionStatus(spec.name, s.state.value, _role(d, spec.name), s.pid, s.port, uptime,
                                      s.in_flight, s.served, s.errors, s.restarts, s.reason, s.last_line))
        return Status(d, rows)

    async def logs(self, name: str, n: int = 50) -> list[str]:
        if not 1 <= n <= 5000:
            raise InvalidArgument(f"Cannot show {n} lines.", "Ask for 1-5000 lines.")
        await self._spec(name)
        backend = self.pool.get(name)
        if backend is not None and backend.ring:
            return backend.log_tail(n)
        path = self.settings.log_dir / f"{name}.log"
        if not path.exists():
            return []
        text = await asyncio.to_thread(path.read_text, "utf-8", "replace")
        return text.splitlines()[-n:]

    async def audit(self, n: int = 20) -> list[AuditEvent]:
        if not 1 <= n <= 1000:
            raise InvalidArgument(f"Cannot show {n} audit events.", "Ask for 1-1000.")
        return await self.store.list_audit(n)

    # requests --------------------------------------------------------------
    async def translate(
        self,
        req: TranslationRequest,
        on_token: Callable[[str], Awaitable[None]],
        on_wait: Callable[[WaitInfo], Awaitable[None]] | None = None,
        on_route: Callable[[Route], Awaitable[None]] | None = None,
    ) -> TranslationResult:
        """Stream one translation. `on_route` hears which version answers before any token,
        so a caller can name it even when the answer is stopped or cut short."""
        translate.validate(req)
        retries = 1  # a backend that died before answering may not be noticed yet: route once more
        while True:
            route = await self.router.acquire(req.conversation_id, on_wait)
            if on_route:
                await on_route(route)
            try:
                with route.backend.lease():
                    return await translate.stream(route, req, on_token)
            except translate.BackendFailed as exc:
                if exc.partial or exc.refused or not retries:
                    raise
                retries -= 1
                await self.pool.wait_change(1.0)  # let the supervisor see the exit

    # helpers ---------------------------------------------------------------
    async def _spec(self, name: str) -> VersionSpec:
        spec = await self.store.get_version(validation.check_name(name))
        if spec is None:
            raise NotFound(f"No version named '{name}' is registered.",
                           f"Register and load it with /load {name} MODEL_PATH.")
        return spec

    @contextlib.asynccontextmanager
    async def _audited(self, actor: str, action: str, args: dict, *, committed: bool = False) -> AsyncIterator[None]:
        """One audit row per operator action: ok, or refused/error with the reason.
        `committed`: the ok row is written by the action's own transaction."""
        try:
            yield
        except Exception as exc:
            outcome = "refused" if isinstance(exc, BatonError) else "error"
            try:
                await self.store.audit(actor, action, args, outcome, str(exc))
            except StoreUnavailable:  # the database may be what failed; the caller sees `exc`
                log.warning("could not audit the refused %s: the database is unavailable", action)
            raise
        if not committed:
            await self.store.audit(actor, action, args, "ok", "")
