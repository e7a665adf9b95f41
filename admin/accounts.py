"""Login accounts: their own `accounts` table in the engine's database, argon2 password hashes.

Chainlit's data layer owns a table called `users` (its idea of a user, without a password),
so ours is named differently. Roles are read from here on every admin command, so a removed
or demoted admin loses their rights at once, whatever their login cookie says.
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import DateTime, String, Text, func, select
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import Conflict, InvalidArgument, NotFound, StoreUnavailable

from .tables import Tables

Role = Literal["admin", "user"]
ROLES: tuple[Role, ...] = ("admin", "user")
USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256

_hasher = PasswordHasher()
# argon2 runs on threads of its own: in asyncio's default pool, six uploads being parsed made an
# admin's login wait 63 s. Two threads, as argon2 uses one core per hash and logins are rare.
_HASHING = ThreadPoolExecutor(max_workers=2, thread_name_prefix="baton-argon2")
T = TypeVar("T")
# Verifying against this when the name is unknown keeps a failed login as slow as a wrong
# password, so response times do not tell which account names exist.
_DUMMY_HASH = _hasher.hash("baton-dummy-password")


async def _hashing(work: Callable[..., T], *args: str) -> T:
    return await asyncio.get_running_loop().run_in_executor(_HASHING, work, *args)


class _Base(DeclarativeBase):
    pass


class AccountRow(_Base):
    __tablename__ = "accounts"
    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Account:
    username: str
    role: Role
    created_by: str
    created_at: datetime

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _account(row: AccountRow) -> Account:
    return Account(row.username, row.role if row.role in ROLES else "user", row.created_by, row.created_at)


def check_username(name: str) -> str:
    if not USERNAME_RE.fullmatch(name or ""):
        raise InvalidArgument(f"'{name[:64]}' is not a valid account name.",
                              "Use 1-64 letters, digits, dots, dashes, underscores or @, "
                              "starting with a letter or digit.")
    return name


def check_password(password: str) -> str:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidArgument(f"The password must be {MIN_PASSWORD}-{MAX_PASSWORD} characters long.",
                              "Choose a longer one (a few random words work well).")
    return password


def check_role(role: str) -> Role:
    if role not in ROLES:
        raise InvalidArgument(f"'{role[:20]}' is not a role.", "Use admin or user.")
    return role


class Accounts(Tables):
    """The repository. Hashing runs in a worker thread: argon2 is deliberately slow."""

    base = _Base

    async def get(self, username: str) -> Account | None:
        async with self._session() as s:
            row = await s.get(AccountRow, username)
            return _account(row) if row else None

    async def list(self) -> list[Account]:
        async with self._session() as s:
            rows = (await s.scalars(select(AccountRow).order_by(AccountRow.username))).all()
            return [_account(r) for r in rows]

    async def count_admins(self) -> int:
        async with self._session() as s:
            admins = select(func.count()).select_from(AccountRow).where(AccountRow.role == "admin")
            return int(await s.scalar(admins) or 0)

    async def verify(self, username: str, password: str) -> Account | None:
        """The account if the password is right, else None (same cost either way)."""
        async with self._session() as s:
            row = await s.get(AccountRow, username) if USERNAME_RE.fullmatch(username or "") else None
        stored = row.password_hash if row else _DUMMY_HASH
        ok = await _hashing(_verify, stored, password[:MAX_PASSWORD])
        if not (ok and row):
            return None
        if _hasher.check_needs_rehash(stored):  # argon2 parameters were raised since
            new_hash = await _hashing(_hasher.hash, password)
            async with self._session.begin() as s:
                fresh = await s.get(AccountRow, username)
                if fresh:
                    fresh.password_hash = new_hash
        return _account(row)

    async def add(self, username: str, password: str, role: str, *, created_by: str) -> Account:
        check_username(username)
        check_password(password)
        role = check_role(role)
        hashed = await _hashing(_hasher.hash, password)
        row = AccountRow(username=username, password_hash=hashed, role=role, created_by=created_by,
                         created_at=datetime.now(UTC))
        try:
            async with self._session.begin() as s:
                s.add(row)
        except IntegrityError:
            raise Conflict(f"An account named '{username}' already exists.",
                           f"Pick another name, or /users remove {username} first.") from None
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the new account ({type(exc).__name__}).",
                                   "Check that the database file is writable, then retry.") from exc
        return _account(row)

    async def remove(self, username: str, *, actor: str) -> Account:
        """Remove an account. Refused for yourself and for the last admin (nobody could log in to fix it)."""
        check_username(username)
        if username == actor:
            raise Conflict("You cannot remove your own account.", "Ask another admin to do it.")
        async with self._session.begin() as s:
            row = await s.get(AccountRow, username)
            if row is None:
                raise NotFound(f"There is no account named '{username}'.", "See /users list.")
            if row.role == "admin":
                admins = await s.scalar(select(func.count()).select_from(AccountRow).where(AccountRow.role == "admin"))
                if (admins or 0) <= 1:
                    raise Conflict(f"'{username}' is the last admin.", "Add another admin first.")
            gone = _account(row)
            await s.delete(row)
        return gone

    async def bootstrap_admin(self, username: str, password: str) -> Account | None:
        """The first admin, from BATON_ADMIN_USER/BATON_ADMIN_PASSWORD, only while no admin exists.

        An existing account is left alone: the environment may hold an old password."""
        if await self.count_admins() > 0:
            return None
        existing = await self.get(username)
        if existing is not None:
            raise Conflict(f"BATON_ADMIN_USER '{username}' exists as a non-admin account.",
                           "Pick another BATON_ADMIN_USER for the first admin.")
        return await self.add(username, password, "admin", created_by="bootstrap")


def _verify(stored: str, password: str) -> bool:
    try:
        return _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
