"""What removing an account does to what it left behind: its chat history and files are deleted.

The choice: a removed person's conversations are deleted with the account (threads, their steps,
elements and feedback; Chainlit's `users` row; their answers' ballots in `answer_votes`; the files
of the history; their own glossary), so a new account with the same name starts empty and nothing
of the old one can be reached by anyone. Admin actions stay in the audit, which names people but
holds no chat text. Every statement binds the name as a parameter; the tables are created by
engine/migrations (most are Chainlit's).
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from engine import StoreUnavailable

from .files import FileStore

# The threads of the account named :name, by the name the thread was written under or by its user row.
_THREADS = ('SELECT id FROM threads WHERE "userIdentifier" = :name '
            'OR "userId" IN (SELECT id FROM users WHERE identifier = :name)')
_FORGET = (f'DELETE FROM feedbacks WHERE "threadId" IN ({_THREADS})',
           f'DELETE FROM elements WHERE "threadId" IN ({_THREADS})',
           f'DELETE FROM steps WHERE "threadId" IN ({_THREADS})',
           f"DELETE FROM threads WHERE id IN ({_THREADS})",
           "DELETE FROM users WHERE identifier = :name",
           "DELETE FROM answer_votes WHERE username = :name",
           "DELETE FROM glossary_terms WHERE owner = :name")

EndSessions = Callable[[str], Awaitable[int]]  # disconnects the open chats of an account; how many


@dataclass(frozen=True)
class Forgotten:
    sessions: int
    threads: int
    files: int

    def __bool__(self) -> bool:
        return bool(self.sessions or self.threads or self.files)

    def __str__(self) -> str:
        return (f"{_count(self.sessions, 'open chat')} ended; history deleted: {_count(self.threads, 'conversation')}, "
                f"{_count(self.files, 'file')} and their own glossary")


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


class Retirement:
    def __init__(self, db: AsyncEngine, files: FileStore, end_sessions: EndSessions) -> None:
        self.db, self.files, self.end_sessions = db, files, end_sessions

    async def forget(self, name: str) -> Forgotten:
        """End the open chats of `name`, an account that no longer exists (so every new request with
        its login is refused: admin/sessions.py), then delete what it left behind, in one
        transaction, then its files. Also run before an account is made, for what an account of
        that name removed before this existed, or whose removal failed halfway, left behind."""
        sessions = await self.end_sessions(name)
        try:
            async with self.db.begin() as conn:
                found = await conn.execute(text("SELECT id FROM users WHERE identifier = :name"), {"name": name})
                owners = [str(i) for i in found.scalars()]
                threads = len((await conn.execute(text(_THREADS), {"name": name})).all())
                for statement in _FORGET:
                    await conn.execute(text(statement), {"name": name})
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The history of '{name}' could not be deleted ({type(exc).__name__}).",
                                   f"Nothing of it was deleted; its login is refused already. Retry with "
                                   f"/users add {name} PASSWORD, which deletes it first, then remove that.") from exc
        files = 0
        for owner in owners:
            files += await self.files.delete_owned(owner)
        return Forgotten(sessions, threads, files)
