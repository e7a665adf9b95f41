"""The admin API on /admin/v1: JSON over the same engine facade, validation and audit as the
chat's commands, for pipelines and the `baton` CLI. Every call needs an admin key, and the
audit names the key (`key:NAME`) as the actor."""

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, status

from admin import shield
from admin.keys import ApiKey, Audited, Keys
from engine import AuditEvent, Deployment, Engine, EvalSetInfo, Evaluation, NotFound, ReplicaView, Sample, VersionStatus
from engine import RolloutView as Rollout
from engine.store import AUDIT_ACTION_MAX, AUDIT_ACTOR_MAX

from .auth import Auth
from .errors import ErrorShapedRoute
from .schemas import (
    CanaryBody,
    DeploymentView,
    EvalBody,
    ForceBody,
    KeyBody,
    LiveNumbers,
    LoadBody,
    Logs,
    RolloutBody,
    RolloutView,
    ShadowBody,
    SwitchBody,
    Unloaded,
)


def router(get_engine: Callable[[], Engine], get_keys: Callable[[], Keys], auth: Auth) -> APIRouter:
    api = APIRouter(prefix="/admin/v1", route_class=ErrorShapedRoute, tags=["admin"])
    Admin = Annotated[ApiKey, Depends(auth.admin)]

    async def version(name: str) -> VersionStatus:
        found = (await get_engine().status()).version(name)
        if found is None:
            raise NotFound(f"No version named '{name}' is registered.", "GET /admin/v1/versions lists them.")
        return found

    # versions -------------------------------------------------------------------------
    @api.get("/versions", summary="Every registered version, its process and its traffic")
    async def versions(key: Admin) -> list[VersionStatus]:
        return (await get_engine().status()).versions

    @api.get("/versions/{name}", summary="One version")
    async def one_version(name: str, key: Admin) -> VersionStatus:
        return await version(name)

    @api.post("/versions", status_code=status.HTTP_202_ACCEPTED,
              summary="Register (with model_path, or url for a remote version) and load a version; returns at "
                      "once, poll until ready")
    async def load(body: LoadBody, key: Admin) -> VersionStatus:
        engine = get_engine()

        async def work() -> VersionStatus:
            if body.model_path is not None or body.url is not None:
                await engine.register(body.name, body.model_path, url=body.url, api_key_env=body.api_key_env,
                                      served_name=body.served_model, flags=body.flags, prompt_template=body.template,
                                      templates=body.templates, max_tokens=body.max_tokens,
                                      on_wrong_language=body.on_wrong_language, actor=key.actor)
            return await engine.load(body.name, actor=key.actor)

        return await shield.to_completion(work())

    @api.delete("/versions/{name}", summary="Drain (bounded) and stop a version that is not serving")
    async def unload(name: str, key: Admin) -> Unloaded:
        drained = await shield.to_completion(get_engine().unload(name, actor=key.actor))
        return Unloaded(name=name, drained=drained)

    @api.get("/versions/{name}/logs", summary="The last lines of a version's log")
    async def logs(name: str, key: Admin, n: Annotated[int, Query(ge=1, le=5000)] = 50) -> Logs:
        return Logs(name=name, lines=await get_engine().logs(name, n))

    # evaluations ----------------------------------------------------------------------
    @api.get("/evaluation-sets", summary="The evaluation sets under BATON_EVAL_ROOTS, or what is wrong with each")
    async def evaluation_sets(key: Admin) -> list[EvalSetInfo]:
        return await get_engine().eval_sets()

    @api.post("/versions/{name}/evaluations", status_code=status.HTTP_201_CREATED,
              summary="Translate an evaluation set with this version (pinned, outside live routing), score and "
                      "store it; runs to completion even if the client goes away")
    async def evaluate(name: str, key: Admin, body: EvalBody | None = None) -> Evaluation:
        return await shield.to_completion(get_engine().evaluate(name, body.set if body else None, actor=key.actor))

    @api.get("/versions/{name}/evaluations", summary="A version's stored evaluations, newest first")
    async def evaluations(name: str, key: Admin, set: Annotated[str | None, Query()] = None,
                          n: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[Evaluation]:
        await version(name)
        return await get_engine().evaluations(name, set, n)

    # deployment -----------------------------------------------------------------------
    async def changed(change: Awaitable[Deployment]) -> DeploymentView:
        await shield.to_completion(change)
        return _view(get_engine())

    @api.get("/deployment", summary="Which version is active, canary, standby and shadow; can anything serve")
    async def deployment(key: Admin) -> DeploymentView:
        return _view(get_engine())

    @api.get("/replicas", summary="Every replica on the database: the generation it applies, its last heartbeat")
    async def replicas(key: Admin) -> list[ReplicaView]:
        return (await get_engine().status()).replicas

    @api.post("/deployment/switch", summary="Send all new requests to a ready version (quality-gated unless forced)")
    async def switch(body: SwitchBody, key: Admin) -> DeploymentView:
        return await changed(get_engine().switch(body.name, force=body.force, actor=key.actor))

    @api.post("/deployment/rollback", summary="Switch back to the standby (previous) version; never gated")
    async def rollback(key: Admin) -> DeploymentView:
        return await changed(get_engine().rollback(actor=key.actor))

    @api.post("/deployment/canary", summary="Send a share of conversations to a ready version")
    async def canary(body: CanaryBody, key: Admin) -> DeploymentView:
        return await changed(get_engine().canary(body.name, body.percent, actor=key.actor))

    @api.delete("/deployment/canary", summary="End the canary: all traffic to the active version")
    async def abort_canary(key: Admin) -> DeploymentView:
        return await changed(get_engine().abort_canary(actor=key.actor))

    @api.post("/deployment/promote", summary="Make the canary the active version (quality-gated unless forced)")
    async def promote(key: Admin, body: ForceBody | None = None) -> DeploymentView:
        return await changed(get_engine().promote(force=bool(body and body.force), actor=key.actor))

    @api.post("/deployment/shadow",
              summary="Copy a share of requests to a ready version, after the users' answers, and compare")
    async def shadow(body: ShadowBody, key: Admin) -> DeploymentView:
        return await changed(get_engine().shadow(body.name, body.percent, actor=key.actor))

    @api.delete("/deployment/shadow", summary="Stop copying requests to the shadow")
    async def stop_shadow(key: Admin) -> DeploymentView:
        return await changed(get_engine().stop_shadow(actor=key.actor))

    # rollouts -------------------------------------------------------------------------
    @api.post("/rollout", status_code=status.HTTP_202_ACCEPTED,
              summary="Ramp a version up as the canary, judged on live traffic between steps; returns at once")
    async def start_rollout(body: RolloutBody, key: Admin) -> RolloutView:
        return _rollout(await shield.to_completion(get_engine().start_rollout(
            body.name, steps=body.steps, step_s=body.step_s, step_requests=body.step_requests, actor=key.actor)))

    @api.get("/rollout", summary="The running rollout (or the last one): its step, numbers and next decision")
    async def rollout_status(key: Admin) -> RolloutView:
        view = get_engine().rollout_status()
        if view is None:
            raise NotFound("No rollout has run yet.", "Start one with POST /admin/v1/rollout.")
        return _rollout(view)

    @api.delete("/rollout", summary="Abort the running rollout: traffic back to the active version at once")
    async def abort_rollout(key: Admin) -> RolloutView:
        return _rollout(await shield.to_completion(get_engine().abort_rollout(actor=key.actor)))

    # audit and keys -------------------------------------------------------------------
    @api.get("/audit", summary="The last admin actions, newest first; of one action and one actor when asked")
    async def audit(key: Admin, n: Annotated[int, Query(ge=1, le=1000)] = 20,
                    action: Annotated[str | None, Query(min_length=1, max_length=AUDIT_ACTION_MAX,
                                                        description="only this action, e.g. keys-add")] = None,
                    actor: Annotated[str | None, Query(min_length=1, max_length=AUDIT_ACTOR_MAX,
                                                       description="only this actor, e.g. root or key:ci")] = None,
                    ) -> list[AuditEvent]:
        return await get_engine().audit(n, action, actor)

    @api.get("/keys", summary="API keys (never their secrets)")
    async def keys(key: Admin) -> list[ApiKey]:
        return await get_keys().list()

    @api.post("/keys", status_code=status.HTTP_201_CREATED,
              summary="Make a key; its secret is in this answer and nowhere else")
    async def add_key(body: KeyBody, key: Admin) -> dict[str, Any]:
        made, secret = await shield.to_completion(
            Audited(get_engine(), get_keys(), key.actor).add(body.name, body.role))
        return {"key": made, "secret": secret}

    @api.delete("/keys/{name}", summary="Revoke a key at once")
    async def revoke_key(name: str, key: Admin) -> ApiKey:
        return await shield.to_completion(Audited(get_engine(), get_keys(), key.actor).revoke(name))

    return api


def _view(engine: Engine) -> DeploymentView:
    health = engine.health()
    d = health.deployment
    return DeploymentView(active=d.active, canary=d.canary, canary_percent=d.canary_percent if d.canary else 0,
                          standby=d.previous, shadow=d.shadow, shadow_percent=d.shadow_percent,
                          shadow_stats=engine.shadow_stats(), updated_by=d.updated_by, updated_at=d.updated_at,
                          status=health.status, detail=health.detail, versions=health.states,
                          generation=d.generation, replica=health.replica)


def _numbers(s: Sample | None) -> LiveNumbers | None:
    if s is None:
        return None
    return LiveNumbers(**s.numbers())


def _rollout(view: Rollout) -> RolloutView:
    r = view.record
    return RolloutView(
        candidate=r.candidate, baseline=r.baseline, state=r.state,  # type: ignore[arg-type]  # RolloutState values
        step=min(r.step, len(r.plan.steps) - 1) + 1, steps=list(r.plan.steps), percent=view.percent,
        step_s=r.plan.step_s, step_requests=r.plan.step_requests, step_elapsed_s=view.step_elapsed_s,
        started_by=r.started_by, started_at=r.started_at, ended_at=r.ended_at, detail=r.detail,
        next_decision=view.next_decision, runner=view.runner, canary=_numbers(view.canary),
        active=_numbers(view.active), timeline=list(r.timeline))
