"""Named glossaries, as DeepL's API has them: an id, a name and a language pair, over terms kept
in Baton's own glossary table (admin/glossary.py), under the owner "glossary:<id>".

So a named glossary's terms get the same checks and limits as the chat's (/glossary), and reach
the engine the same way; a request uses one only when it names it. The `named_glossaries` table
holds the name and the pair. The terms are written first and the name last, so a glossary is
listed only once its terms are all stored, and a deletion removes the name first.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, String, delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import InvalidArgument, NotFound, StoreUnavailable
from engine.terminology import Term

from .glossary import Glossary, check_lang
from .tables import Tables

OWNER_PREFIX = "glossary:"  # ':' is never in an account name, so no user's glossary is one of these
MAX_NAME_CHARS = 128


class _Base(DeclarativeBase):
    pass


class NamedRow(_Base):
    __tablename__ = "named_glossaries"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(MAX_NAME_CHARS))
    source_lang: Mapped[str] = mapped_column(String(16))
    target_lang: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Named:
    id: str
    name: str
    source_lang: str  # Baton's codes
    target_lang: str
    created_at: datetime
    terms: tuple[Term, ...]


def _id(glossary_id: str) -> str:
    try:
        return str(uuid.UUID(glossary_id))
    except ValueError:
        raise NotFound(f"There is no glossary '{glossary_id[:40]}'.", "List them with GET /v2/glossaries.") from None


class NamedGlossaries(Tables):
    base = _Base

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self._terms = Glossary(engine)

    async def create(self, name: str, source_lang: str, target_lang: str, pairs: list[tuple[str, str]], *,
                     created_by: str) -> Named:
        name = " ".join(name.split())
        if not 1 <= len(name) <= MAX_NAME_CHARS:
            raise InvalidArgument(f"A glossary name is 1-{MAX_NAME_CHARS} characters; this one is {len(name)}.",
                                  "Give the glossary a short name.")
        source, target = check_lang(source_lang), check_lang(target_lang)
        if not pairs:
            raise InvalidArgument("The glossary has no entries.", "Send at least one line: SOURCE<tab>TARGET.")
        new_id = str(uuid.uuid4())
        terms = await self._terms.replace(OWNER_PREFIX + new_id, [Term(s, t, target) for s, t in pairs])
        row = NamedRow(id=new_id, name=name, source_lang=source, target_lang=target, created_by=created_by,
                       created_at=datetime.now(UTC))
        try:
            async with self._session.begin() as s:
                s.add(row)
        except SQLAlchemyError as exc:
            await self._terms.replace(OWNER_PREFIX + new_id, [])
            raise StoreUnavailable(f"The database refused the glossary ({type(exc).__name__}).",
                                   "Nothing changed; try again.") from exc
        return Named(new_id, name, source, target, row.created_at, tuple(terms))

    async def list(self) -> list[Named]:
        async with self._session() as s:
            rows = (await s.scalars(select(NamedRow).order_by(NamedRow.created_at))).all()
        return [await self._named(r) for r in rows]

    async def get(self, glossary_id: str) -> Named:
        async with self._session() as s:
            row = await s.get(NamedRow, _id(glossary_id))
        if row is None:
            raise NotFound(f"There is no glossary '{glossary_id[:40]}'.", "List them with GET /v2/glossaries.")
        return await self._named(row)

    async def delete(self, glossary_id: str) -> Named:
        gone = await self.get(glossary_id)
        try:
            async with self._session.begin() as s:
                await s.execute(delete(NamedRow).where(NamedRow.id == gone.id))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the deletion ({type(exc).__name__}).",
                                   "Nothing changed; try again.") from exc
        await self._terms.replace(OWNER_PREFIX + gone.id, [])
        return gone

    async def _named(self, row: NamedRow) -> Named:
        terms = await self._terms.terms(OWNER_PREFIX + row.id)
        return Named(row.id, row.name, row.source_lang, row.target_lang, row.created_at, tuple(terms))
