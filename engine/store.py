"""SQLAlchemy async models and the repository: versions, deployment, audit, evaluations, rollouts, processes."""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Float,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    make_url,
    select,
    update,
)
from sqlalchemy.engine import Engine
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry

from . import masking, migrations
from .errors import Conflict, StoreUnavailable
from .evaluation import Evaluation, PairScores
from .scoring import Scores
from .types import AuditEvent, Deployment, ReplicaRecord, RolloutPlan, RolloutRecord, Sampling, VersionSpec

NOTIFY_CHANNEL = "baton_deployment"  # every committed deployment change, with its generation (Postgres)
BUSY_TIMEOUT_MS = 5000  # how long a SQLite write waits for another connection's
MIGRATION_WAIT_MS = 120_000  # ...and a migration for another process's migration (a busy box takes seconds)
_MIGRATION_LOCK = 0x6261746F6E  # pg_advisory_xact_lock's key: one replica runs the migrations at a time


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class VersionRow(Base):
    __tablename__ = "model_versions"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    model_path: Mapped[str] = mapped_column(Text)
    served_name: Mapped[str] = mapped_column(String(128))
    flags: Mapped[list[str]] = mapped_column(JSON, default=list)
    interpreter: Mapped[str | None] = mapped_column(Text, nullable=True)
    prompt_template: Mapped[str] = mapped_column(Text)
    templates: Mapped[dict[str, str] | None] = mapped_column(JSON, nullable=True)  # by capability
    sampling: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # Sampling's fields
    notes: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # What the operator wants for it (engine.states.Desired); NULL in a database from before it.
    desired: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # A remote version: its server's base URL and the variable holding its API key (model_path is "").
    url: Mapped[str | None] = mapped_column(Text, nullable=True)
    api_key_env: Mapped[str | None] = mapped_column(String(128), nullable=True)
    on_wrong_language: Mapped[str | None] = mapped_column(String(16), nullable=True)  # NULL: "flag"


class DeploymentRow(Base):
    __tablename__ = "deployment"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    active: Mapped[str | None] = mapped_column(String(64), nullable=True)
    previous: Mapped[str | None] = mapped_column(String(64), nullable=True)
    canary: Mapped[str | None] = mapped_column(String(64), nullable=True)
    canary_percent: Mapped[int] = mapped_column(Integer, default=0)
    shadow: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # NULL in a database from before shadows (the added column has no default there).
    shadow_percent: Mapped[int | None] = mapped_column(Integer, nullable=True, default=0)
    updated_by: Mapped[str] = mapped_column(String(128), default="")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # Bumped by every change; a change written from an older generation is refused (Store.save_change).
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


AUDIT_ACTOR_MAX, AUDIT_ACTION_MAX = 128, 64  # column lengths


class AuditRow(Base):
    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(AUDIT_ACTOR_MAX))
    action: Mapped[str] = mapped_column(String(AUDIT_ACTION_MAX))
    arguments: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")


class EvaluationRow(Base):
    """One /eval: a version's scores on a set, and which file (checksum) they are for."""

    __tablename__ = "evaluations"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    version: Mapped[str] = mapped_column(String(64), index=True)
    set_name: Mapped[str] = mapped_column(String(64))
    set_checksum: Mapped[str] = mapped_column(String(64))
    # {"overall": Scores, "pairs": [PairScores...], "flagged": {check: rows}} (no "flagged" before the checks)
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)
    latency_p50_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    latency_p95_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    errors: Mapped[int] = mapped_column(Integer)
    rows: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    by: Mapped[str] = mapped_column(String(128), default="")


class RolloutRow(Base):
    __tablename__ = "rollouts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    candidate: Mapped[str] = mapped_column(String(64))
    baseline: Mapped[str] = mapped_column(String(64))
    plan: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), index=True)
    step: Mapped[int] = mapped_column(Integer, default=0)
    started_by: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")
    timeline: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    runner: Mapped[str] = mapped_column(String(128), default="", server_default="")  # the replica driving it


class ProcessRow(Base):
    """A backend process group this engine started, so a later engine can end it if orphaned."""

    __tablename__ = "backend_processes"
    pgid: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    marker: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # The replica that started it ("" before replicas): only that one may end it as an orphan.
    replica: Mapped[str] = mapped_column(String(128), server_default="")


class ReplicaRow(Base):
    """A running app replica: the deployment generation it serves, and when it last said so."""

    __tablename__ = "replicas"
    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


def _sqlite_pragmas(dbapi_conn: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
    """Per connection. WAL mode belongs to the file: Store.migrate sets it."""
    cur = dbapi_conn.cursor()
    cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA synchronous=NORMAL")  # durable in WAL mode across app crashes
    cur.close()


def _json(arguments: object) -> str:
    return arguments if isinstance(arguments, str) else json.dumps(arguments, default=str, ensure_ascii=False)


def _audit_row(actor: str, action: str, arguments: object, outcome: str, detail: str) -> AuditRow:
    """Every audit row is written through here: a credential in its arguments or detail is masked."""
    return AuditRow(actor=actor, action=action, arguments=masking.mask(_json(arguments)), outcome=outcome,
                    detail=masking.mask(detail))


def _spec(row: VersionRow) -> VersionSpec:
    s = dict(row.sampling or {})
    if "stop" in s:
        s["stop"] = tuple(s["stop"])
    return VersionSpec(
        name=row.name,
        model_path=Path(row.model_path) if row.model_path else None,
        served_name=row.served_name,
        flags=tuple(row.flags or ()),
        interpreter=Path(row.interpreter) if row.interpreter else None,
        prompt_template=row.prompt_template,
        templates=dict(row.templates or {}),
        sampling=Sampling(**s),
        notes=row.notes,
        created_by=row.created_by,
        created_at=row.created_at,
        url=row.url,
        api_key_env=row.api_key_env,
        on_wrong_language="retranslate" if row.on_wrong_language == "retranslate" else "flag",
    )


def _deployment(row: DeploymentRow | None) -> Deployment:
    if row is None:
        return Deployment()
    return Deployment(
        active=row.active,
        previous=row.previous,
        canary=row.canary,
        canary_percent=row.canary_percent,
        shadow=row.shadow,
        shadow_percent=row.shadow_percent or 0,
        updated_by=row.updated_by,
        updated_at=row.updated_at,
        generation=row.generation,
    )


def _evaluation(row: EvaluationRow) -> Evaluation:
    pairs = tuple(PairScores(p["src_lang"], p["tgt_lang"], Scores(**p["scores"])) for p in row.scores["pairs"])
    return Evaluation(row.version, row.set_name, row.set_checksum, Scores(**row.scores["overall"]), pairs, row.rows,
                      row.errors, row.latency_p50_ms, row.latency_p95_ms, row.at, row.by, row.id,
                      row.scores.get("flagged"))


def _rollout(row: RolloutRow) -> RolloutRecord:
    p = row.plan
    return RolloutRecord(
        id=row.id, candidate=row.candidate, baseline=row.baseline,
        plan=RolloutPlan(tuple(p["steps"]), float(p["step_s"]), int(p["step_requests"])),
        state=row.state, step=row.step, started_by=row.started_by, started_at=row.started_at,
        ended_at=row.ended_at, detail=row.detail, timeline=tuple(row.timeline or ()), runner=row.runner,
    )


def _write_rollout(s: Session, r: RolloutRecord) -> RolloutRow:
    row = (s.get(RolloutRow, r.id) if r.id is not None else None) or RolloutRow()
    row.candidate, row.baseline, row.state, row.step = r.candidate, r.baseline, r.state, r.step
    row.plan = {**asdict(r.plan), "steps": list(r.plan.steps)}
    row.started_by, row.started_at = r.started_by, r.started_at or utcnow()
    row.ended_at, row.detail, row.timeline, row.runner = r.ended_at, r.detail, list(r.timeline), r.runner
    s.add(row)
    return row


def _changed_meanwhile(how: str) -> Conflict:
    return Conflict(f"The deployment changed on another replica meanwhile ({how}); nothing was changed.",
                    "Look at /status and try again.")


@dataclass(frozen=True)
class Change:
    """One change of the deployment, written in one transaction with its audit row."""

    deployment: Deployment
    desired: dict[str, str]  # version -> desired state, for the versions whose desire changed
    actor: str
    action: str
    arguments: object
    detail: str
    rollout: RolloutRecord | None = None  # a rollout's new state, committed with the deployment it set


@dataclass(frozen=True)
class Saved:
    deployment: Deployment
    rollout: RolloutRecord | None  # as written, with its id


def _write_change(s: Session, change: Change) -> Saved:
    """Compare-and-swap on the deployment's generation: the row stays locked until commit, and a
    change made from a deployment another replica has changed since is refused, writing nothing."""
    dep = change.deployment
    row = s.get(DeploymentRow, 1, with_for_update=True) or DeploymentRow(id=1, generation=0)
    if row.generation != dep.generation:
        raise _changed_meanwhile(f"generation {row.generation}, this replica had {dep.generation}")
    s.add(_audit_row(change.actor, change.action, change.arguments, "ok", change.detail))
    for name, desired in change.desired.items():
        version = s.get(VersionRow, name)
        if version is not None:
            version.desired = desired
    row.active, row.previous = dep.active, dep.previous
    row.canary, row.canary_percent = dep.canary, dep.canary_percent
    row.shadow, row.shadow_percent = dep.shadow, dep.shadow_percent
    row.updated_by, row.updated_at = change.actor, utcnow()
    row.generation = dep.generation + 1
    s.add(row)
    if s.get_bind().dialect.name == "postgresql":  # delivered to every LISTENer when this commits
        s.execute(select(func.pg_notify(NOTIFY_CHANNEL, str(row.generation))))
    rollout = _write_rollout(s, change.rollout) if change.rollout is not None else None
    s.flush()  # assigns a new rollout its id
    return Saved(_deployment(row), _rollout(rollout) if rollout is not None else None)


class Store:
    """The repository. Every write is one transaction; failures surface as StoreUnavailable."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: AsyncEngine = create_async_engine(url)
        self._sync_engine: Engine | None = None
        self._sync_session: sessionmaker[Session] | None = None
        self._sqlite = self.engine.dialect.name == "sqlite"
        if self._sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            if self.engine.url.database not in (None, "", ":memory:"):
                # The same file through the standard library's driver, for one-round-trip writes.
                self._sync_engine = create_engine(make_url(url).set(drivername="sqlite"))
                event.listen(self._sync_engine, "connect", _sqlite_pragmas)
                self._sync_session = sessionmaker(self._sync_engine, expire_on_commit=False)
        self._session = async_sessionmaker(self.engine, expire_on_commit=False)

    async def migrate(self) -> None:
        """Create or upgrade the schema (engine/migrations), in one transaction. Processes starting
        together take turns: the first runs the migrations, the others then find nothing left to do."""
        try:
            if self._sqlite:
                await self._wal()
            async with self.engine.begin() as conn:
                if conn.dialect.name == "postgresql":
                    await conn.execute(select(func.pg_advisory_xact_lock(_MIGRATION_LOCK)))
                else:  # SQLite's driver would begin only at the first write, after Alembic has looked.
                    # Another process may be migrating: wait for it longer than a write normally would.
                    await conn.exec_driver_sql(f"PRAGMA busy_timeout={MIGRATION_WAIT_MS}")
                    await conn.exec_driver_sql("BEGIN IMMEDIATE")
                await conn.run_sync(migrations.upgrade)
                if conn.dialect.name != "postgresql":
                    await conn.exec_driver_sql(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc

    async def _wal(self) -> None:
        """Put the SQLite file in WAL mode (readers never wait for the writer). Processes converting
        a new file at once deadlock on its lock, and SQLite refuses all but one at once, without
        waiting: the others try again, as long as a migration would wait."""
        deadline = asyncio.get_running_loop().time() + MIGRATION_WAIT_MS / 1000
        while True:
            try:
                async with self.engine.connect() as conn:
                    await conn.exec_driver_sql("PRAGMA journal_mode=WAL")
                return
            except OperationalError as exc:
                if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        await self.engine.dispose()
        if self._sync_engine is not None:
            await asyncio.to_thread(self._sync_engine.dispose)

    def _failed(self, exc: Exception) -> StoreUnavailable:
        cause = getattr(exc, "orig", None) or exc  # the driver's own words ("database is locked")
        return StoreUnavailable(
            f"The database refused the change ({str(cause).splitlines()[0]}); nothing was changed.",
            "Check that the database file is writable and not locked, then retry." if self._sqlite
            else "Check that the database server is reachable and accepts writes, then retry.",
        )

    # versions ---------------------------------------------------------------
    async def get_version(self, name: str) -> VersionSpec | None:
        async with self._session() as s:
            row = await s.get(VersionRow, name)
            return _spec(row) if row else None

    async def list_versions(self) -> list[VersionSpec]:
        async with self._session() as s:
            rows = (await s.scalars(select(VersionRow).order_by(VersionRow.created_at))).all()
            return [_spec(r) for r in rows]

    async def save_version(self, spec: VersionSpec, audit: tuple[str, str, object]) -> None:
        """The recipe and its audit row (actor, action, arguments) in one transaction."""
        row = VersionRow(
            name=spec.name,
            model_path=str(spec.model_path) if spec.model_path else "",
            served_name=spec.served_name,
            flags=list(spec.flags),
            interpreter=str(spec.interpreter) if spec.interpreter else None,
            prompt_template=spec.prompt_template,
            templates=dict(spec.templates),
            sampling={**asdict(spec.sampling), "stop": list(spec.sampling.stop)},
            notes=spec.notes,
            created_by=spec.created_by,
            created_at=spec.created_at or utcnow(),
            url=spec.url,
            api_key_env=spec.api_key_env,
            on_wrong_language=spec.on_wrong_language,
        )
        try:
            async with self._session.begin() as s:
                await s.merge(row)
                actor, action, arguments = audit
                s.add(_audit_row(actor, action, arguments, "ok", ""))
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc

    # deployment -------------------------------------------------------------
    async def get_deployment(self) -> Deployment:
        async with self._session() as s:
            return _deployment(await s.get(DeploymentRow, 1))

    async def save_change(self, change: Change) -> Saved:
        """The deployment, the desired states it changes, and its audit row, in one durable commit,
        if the deployment is still at `change.deployment.generation` (else Conflict, nothing written).

        A switch waits for this commit. Through aiosqlite each statement is a round trip between
        SQLite's thread and the event loop (a dozen per commit), and under load every round trip
        queues behind the streams' callbacks; so on SQLite the whole transaction runs in one
        worker thread with the synchronous driver: one round trip."""
        try:
            if self._sync_session is not None:
                return await asyncio.to_thread(self._write_change_sync, change)
            async with self._session.begin() as s:
                return await s.run_sync(_write_change, change)
        except IntegrityError as exc:  # two replicas wrote the very first change at once: no row to lock yet
            raise _changed_meanwhile("its first change") from exc
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc

    def _write_change_sync(self, change: Change) -> Saved:
        assert self._sync_session is not None
        with self._sync_session.begin() as s:
            # The driver would begin at the first write, after the generation is read: another
            # process could write in between. The write lock first makes the compare-and-swap whole.
            s.connection().exec_driver_sql("BEGIN IMMEDIATE")
            return _write_change(s, change)

    async def generation(self) -> int:
        """The deployment's generation (0 before the first change): cheap, for replicas to compare."""
        async with self._session() as s:
            return (await s.scalar(select(DeploymentRow.generation).where(DeploymentRow.id == 1))) or 0

    async def desired_states(self) -> dict[str, str | None]:
        async with self._session() as s:
            rows = (await s.execute(select(VersionRow.name, VersionRow.desired))).all()
            return {name: desired for name, desired in rows}

    # rollouts ---------------------------------------------------------------
    async def latest_rollout(self) -> RolloutRecord | None:
        async with self._session() as s:
            row = (await s.scalars(select(RolloutRow).order_by(RolloutRow.id.desc()).limit(1))).first()
            return _rollout(row) if row else None

    # audit ------------------------------------------------------------------
    async def audit(self, actor: str, action: str, arguments: object, outcome: str, detail: str = "") -> int:
        """Write an audit row; its id (for `amend_audit`)."""
        row = _audit_row(actor, action, arguments, outcome, detail)
        try:
            async with self._session.begin() as s:
                s.add(row)
                await s.flush()
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        return row.id

    async def amend_audit(self, row_id: int, detail: str) -> None:
        """Rewrite the detail of a row, e.g. the count of a summarized burst."""
        try:
            async with self._session.begin() as s:
                await s.execute(update(AuditRow).where(AuditRow.id == row_id).values(detail=masking.mask(detail)))
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc

    async def list_audit(self, limit: int = 20, action: str | None = None,
                         actor: str | None = None) -> list[AuditEvent]:
        """The newest rows, of one action and one actor when given (exact matches)."""
        query = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit)
        if action is not None:
            query = query.where(AuditRow.action == action)
        if actor is not None:
            query = query.where(AuditRow.actor == actor)
        async with self._session() as s:
            rows = (await s.scalars(query)).all()
            return [AuditEvent(r.at, r.actor, r.action, r.arguments, r.outcome, r.detail) for r in rows]

    # evaluations ------------------------------------------------------------
    async def save_evaluation(self, ev: Evaluation, action: str, arguments: object, detail: str) -> Evaluation:
        """The evaluation and its audit row (by `ev.by`) in one transaction; returns it as stored."""
        row = EvaluationRow(
            version=ev.version, set_name=ev.set_name, set_checksum=ev.set_checksum,
            scores={"overall": asdict(ev.overall), "pairs": [asdict(p) for p in ev.pairs], "flagged": ev.flagged},
            latency_p50_ms=ev.latency_p50_ms, latency_p95_ms=ev.latency_p95_ms, errors=ev.errors, rows=ev.rows,
            by=ev.by,
        )
        try:
            async with self._session.begin() as s:
                s.add(row)
                s.add(_audit_row(ev.by, action, arguments, "ok", detail))
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        return _evaluation(row)

    async def list_evaluations(self, version: str | None = None, set_name: str | None = None,
                               checksum: str | None = None, limit: int = 20) -> list[Evaluation]:
        """Newest first."""
        q = select(EvaluationRow).order_by(EvaluationRow.id.desc()).limit(limit)
        if version is not None:
            q = q.where(EvaluationRow.version == version)
        if set_name is not None:
            q = q.where(EvaluationRow.set_name == set_name)
        if checksum is not None:
            q = q.where(EvaluationRow.set_checksum == checksum)
        async with self._session() as s:
            return [_evaluation(r) for r in (await s.scalars(q)).all()]

    async def latest_evaluations(self, set_name: str | None = None) -> dict[str, Evaluation]:
        """Each version's newest evaluation (on `set_name`, or on any set)."""
        newest = select(func.max(EvaluationRow.id)).group_by(EvaluationRow.version)
        if set_name is not None:
            newest = newest.where(EvaluationRow.set_name == set_name)
        async with self._session() as s:
            rows = (await s.scalars(select(EvaluationRow).where(EvaluationRow.id.in_(newest)))).all()
            return {r.version: _evaluation(r) for r in rows}

    # process records --------------------------------------------------------
    async def record_process(self, pgid: int, version: str, marker: str, replica: str) -> None:
        async with self._session.begin() as s:
            await s.merge(ProcessRow(pgid=pgid, version=version, marker=marker, replica=replica))

    async def forget_process(self, pgid: int) -> None:
        async with self._session.begin() as s:
            row = await s.get(ProcessRow, pgid)
            if row:
                await s.delete(row)

    async def list_processes(self, replica: str) -> list[tuple[int, str, str]]:
        """The processes `replica` recorded (and those recorded before replicas)."""
        async with self._session() as s:
            rows = (await s.scalars(select(ProcessRow).where(ProcessRow.replica.in_((replica, ""))))).all()
            return [(r.pgid, r.version, r.marker) for r in rows]

    # replicas ---------------------------------------------------------------
    async def beat(self, replica_id: str, generation: int, started_at: datetime) -> None:
        """This replica is alive and serves `generation`."""
        try:
            async with self._session.begin() as s:
                await s.merge(ReplicaRow(id=replica_id, generation=generation, started_at=started_at,
                                         heartbeat_at=utcnow()))
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc

    async def list_replicas(self) -> list[ReplicaRecord]:
        async with self._session() as s:
            rows = (await s.scalars(select(ReplicaRow).order_by(ReplicaRow.id))).all()
            return [ReplicaRecord(r.id, r.generation, r.started_at, r.heartbeat_at) for r in rows]

    async def leave(self, replica_id: str) -> None:
        try:
            async with self._session.begin() as s:
                row = await s.get(ReplicaRow, replica_id)
                if row is not None:
                    await s.delete(row)
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
