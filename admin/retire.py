"""What removing an account does to what it left behind: its chat history and files are deleted.

The choice: a removed person's conversations are deleted with the account (threads, their steps,
elements and votes; Chainlit's `users` row; the files of the history; their own glossary), so a
new account with the same name starts empty and nothing of the old one can be reached by anyone.
Admin actions stay in the audit, which names people but holds no chat text. Every statement binds
the name as a parameter; the tables are Chainlit's, created by engine/migrations.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from .files import FileStore
from .glossary import Glossary

# The threads of the account named :name, by the name the thread was written under or by its user row.
_THREADS = ('SELECT id FROM threads WHERE "userIdentifier" = :name '
            'OR "userId" IN (SELECT id FROM users WHERE identifier = :name)')
_DELETE = (f'DELETE FROM feedbacks WHERE "threadId" IN ({_THREADS})',
           f'DELETE FROM elements WHERE "threadId" IN ({_THREADS})',
           f'DELETE FROM steps WHERE "threadId" IN ({_THREADS})')


EndSessions = Callable[[str], Awaitable[int]]  # disconnects the open chats of an account; how many


@dataclass(frozen=True)
class Forgotten:
    sessions: int
    threads: int
    files: int

    def __str__(self) -> str:
        return (f"{self.sessions} open chats ended; history deleted: {self.threads} conversations, "
                f"{self.files} files and their own glossary")


class Retirement:
    def __init__(self, db: AsyncEngine, files: FileStore, glossary: Glossary, end_sessions: EndSessions) -> None:
        self.db, self.files, self.glossary, self.end_sessions = db, files, glossary, end_sessions

    async def forget(self, name: str) -> Forgotten:
        """End the open chats of the account `name` (already removed, so every new request with its
        login is refused: admin/sessions.py), then delete its chat history, files and glossary."""
        sessions = await self.end_sessions(name)
        async with self.db.begin() as conn:
            owners = [str(i) for i in (await conn.execute(text("SELECT id FROM users WHERE identifier = :name"),
                                                          {"name": name})).scalars()]
            threads = len((await conn.execute(text(_THREADS), {"name": name})).all())
            for statement in _DELETE:
                await conn.execute(text(statement), {"name": name})
            await conn.execute(text(f"DELETE FROM threads WHERE id IN ({_THREADS})"), {"name": name})
            await conn.execute(text("DELETE FROM users WHERE identifier = :name"), {"name": name})
        files = 0
        for owner in owners:
            files += await self.files.delete_owned(owner)
        await self.glossary.forget(name)
        return Forgotten(sessions, threads, files)
