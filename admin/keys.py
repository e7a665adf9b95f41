"""API keys for the OpenAI-compatible gateway and the admin API: their own `api_keys` table.

A key is shown once, when it is made, and stored as its SHA-256. Keys are 256 random bits, so a
fast hash is enough (nobody can search that space), and a slow one (argon2, as for passwords)
would cost every request milliseconds. A `user` key may run inference; an `admin` key may also
use the admin API. Verified keys are cached briefly so a request costs no database round trip;
a revoke through this process drops the cache at once.
"""
from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, String, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import BatonError, Conflict, Engine, NotFound, StoreUnavailable

from .accounts import Role, check_role, check_username
from .tables import Tables

PREFIX = "baton-"
CACHE_S = 5.0


class _Base(DeclarativeBase):
    pass


class KeyRow(_Base):
    __tablename__ = "api_keys"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    hint: Mapped[str] = mapped_column(String(16))  # the first characters, to tell keys apart in a list
    created_by: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


@dataclass(frozen=True)
class ApiKey:
    name: str
    role: Role
    hint: str
    created_by: str
    created_at: datetime
    revoked_at: datetime | None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @property
    def actor(self) -> str:
        """How the audit names what this key did."""
        return f"key:{self.name}"


def _key(row: KeyRow) -> ApiKey:
    return ApiKey(row.name, check_role(row.role), row.hint, row.created_by, row.created_at, row.revoked_at)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class Keys(Tables):
    base = _Base

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._cache: dict[str, tuple[ApiKey, float]] = {}

    async def add(self, name: str, role: str, *, created_by: str) -> tuple[ApiKey, str]:
        """A new key and its secret, which is never stored and cannot be shown again. The name of
        a revoked key may be used again (rotation)."""
        check_username(name)
        role = check_role(role)
        secret = PREFIX + secrets.token_urlsafe(32)
        row = KeyRow(name=name, role=role, key_hash=digest(secret), hint=secret[: len(PREFIX) + 4],
                     created_by=created_by, created_at=datetime.now(UTC), revoked_at=None)
        try:
            async with self._session.begin() as s:
                old = await s.get(KeyRow, name)
                if old is not None and old.revoked_at is None:
                    raise Conflict(f"A key named '{name}' already exists.",
                                   f"Pick another name, or revoke it first (/keys revoke {name}).")
                if old is not None:
                    await s.delete(old)
                    await s.flush()
                s.add(row)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the new key ({type(exc).__name__}).",
                                   "Check that the database is writable, then retry.") from exc
        return _key(row), secret

    async def revoke(self, name: str) -> ApiKey:
        check_username(name)
        try:
            async with self._session.begin() as s:
                row = await s.get(KeyRow, name)
                if row is None or row.revoked_at is not None:
                    raise NotFound(f"There is no active key named '{name}'.", "See /keys list.")
                row.revoked_at = datetime.now(UTC)
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the revocation ({type(exc).__name__}).",
                                   "Check that the database is writable, then retry.") from exc
        self._cache.clear()
        return _key(row)

    async def list(self) -> list[ApiKey]:
        async with self._session() as s:
            rows = (await s.scalars(select(KeyRow).order_by(KeyRow.name))).all()
            return [_key(r) for r in rows]

    async def verify(self, secret: str) -> ApiKey | None:
        """The active key with this secret, or None."""
        if not secret.startswith(PREFIX) or len(secret) > 128:
            return None
        h = digest(secret)
        now = time.monotonic()
        if (hit := self._cache.get(h)) is not None and hit[1] > now:
            return hit[0]
        async with self._session() as s:
            row = await s.scalar(select(KeyRow).where(KeyRow.key_hash == h, KeyRow.revoked_at.is_(None)))
        if row is None:
            self._cache.pop(h, None)
            return None
        key = _key(row)
        if len(self._cache) > 1000:  # keys are few; a bound keeps a flood of valid-looking ones harmless
            self._cache.clear()
        self._cache[h] = (key, now + CACHE_S)
        return key


class Audited:
    """Key changes with their audit rows (the name and role, never the secret), for the chat's
    /keys and the admin API alike."""

    def __init__(self, engine: Engine, keys: Keys, actor: str) -> None:
        self._engine, self._keys, self._actor = engine, keys, actor

    async def add(self, name: str, role: str) -> tuple[ApiKey, str]:
        args = {"name": name, "role": role}
        try:
            made, secret = await self._keys.add(name, role, created_by=self._actor)
        except BatonError as exc:
            await self._engine.record(self._actor, "keys-add", args, "refused", str(exc))
            raise
        await self._engine.record(self._actor, "keys-add", args, "ok", f"shown once, starts {made.hint}")
        return made, secret

    async def revoke(self, name: str) -> ApiKey:
        try:
            gone = await self._keys.revoke(name)
        except BatonError as exc:
            await self._engine.record(self._actor, "keys-revoke", {"name": name}, "refused", str(exc))
            raise
        await self._engine.record(self._actor, "keys-revoke", {"name": name}, "ok")
        return gone
