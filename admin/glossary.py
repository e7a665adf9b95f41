"""Glossaries: each user's own terms, and shared ones kept by admins (owner "").

A term maps a source phrase to the translation it must get, for one target language or for
all. The chat gives the engine the terms of the user and the shared ones; the engine keeps those
that occur in the text and checks the answer for them. A user's own term wins over a shared
one with the same source and language.
"""
from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, DateTime, Integer, String, UniqueConstraint, delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import InvalidArgument, NotFound, StoreUnavailable
from engine.languages import NAMES
from engine.terminology import Term

from .tables import Tables

SHARED = ""  # the owner of the shared glossary
MAX_TERM_CHARS = 100
MAX_TERMS = 500  # per glossary: every request looks through them


class _Base(DeclarativeBase):
    pass


class TermRow(_Base):
    __tablename__ = "glossary_terms"
    __table_args__ = (UniqueConstraint("owner", "source_key", "lang"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    source: Mapped[str] = mapped_column(String(MAX_TERM_CHARS))
    source_key: Mapped[str] = mapped_column(String(MAX_TERM_CHARS))  # casefolded: one term per source
    target: Mapped[str] = mapped_column(String(MAX_TERM_CHARS))
    lang: Mapped[str] = mapped_column(String(16), default="")  # "" for every target language
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


def _checked(text: str, what: str) -> str:
    text = " ".join(text.split())
    if not text:
        raise InvalidArgument(f"The {what} term is empty.", "Write it as /glossary add SOURCE = TARGET.")
    if len(text) > MAX_TERM_CHARS:
        raise InvalidArgument(f"The {what} term is {len(text)} characters long; the limit is {MAX_TERM_CHARS}.",
                              "Keep glossary terms to a word or a short phrase.")
    return text


def check_lang(code: str | None) -> str:
    if code is None or code == "":
        return ""
    if code not in NAMES:
        raise InvalidArgument(f"'{code[:20]}' is not a language code Baton knows.",
                              "Use a code such as fr, de or zh (GET /v1/translate/languages lists them).")
    return code


def _the_term(owner: str, source: str, code: str) -> tuple[ColumnElement[bool], ...]:
    """Where-clauses for the one term a glossary may hold for (source, language)."""
    return TermRow.owner == owner, TermRow.lang == code, TermRow.source_key == source.casefold()


def _term(row: TermRow) -> Term:
    return Term(row.source, row.target, row.lang or None)


class Glossary(Tables):
    base = _Base

    async def add(self, owner: str, source: str, target: str, lang: str | None) -> tuple[Term, bool]:
        """Add or replace a term; True when it replaced one."""
        source, target, code = _checked(source, "source"), _checked(target, "target"), check_lang(lang)
        try:
            async with self._session.begin() as s:
                row = await s.scalar(select(TermRow).where(*_the_term(owner, source, code)))
                if row is None:
                    count = await s.scalar(select(func.count()).select_from(TermRow).where(TermRow.owner == owner))
                    if (count or 0) >= MAX_TERMS:
                        raise InvalidArgument(f"The glossary already holds {MAX_TERMS} terms.",
                                              "Remove some with /glossary remove SOURCE first.")
                    s.add(TermRow(owner=owner, source=source, source_key=source.casefold(), target=target, lang=code))
                else:
                    row.source, row.target = source, target
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the term ({type(exc).__name__}).",
                                   "Nothing changed; try again.") from exc
        return Term(source, target, code or None), row is not None

    async def remove(self, owner: str, source: str, lang: str | None) -> None:
        code, key = check_lang(lang), _checked(source, "source")
        try:
            async with self._session.begin() as s:
                gone = await s.execute(delete(TermRow).where(*_the_term(owner, key, code)))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the change ({type(exc).__name__}).",
                                   "Nothing changed; try again.") from exc
        if not getattr(gone, "rowcount", 0):
            where = f" for {NAMES[code]}" if code else ""
            raise NotFound(f"There is no term '{source[:MAX_TERM_CHARS]}'{where} in that glossary.",
                           "See the terms with /glossary list.")

    async def replace(self, owner: str, terms: Sequence[Term]) -> list[Term]:
        """The owner's whole glossary at once, all or nothing: each term checked as `add` checks it,
        the last of two with the same source and language kept."""
        rows = {(source.casefold(), code): TermRow(owner=owner, source=source, source_key=source.casefold(),
                                                    target=_checked(t.target, "target"), lang=code)
                for t in terms for source, code in [(_checked(t.source, "source"), check_lang(t.lang))]}
        if len(rows) > MAX_TERMS:
            raise InvalidArgument(f"{len(rows)} terms in one glossary; the limit is {MAX_TERMS}.",
                                  "Split them over several glossaries.")
        try:
            async with self._session.begin() as s:
                await s.execute(delete(TermRow).where(TermRow.owner == owner))
                s.add_all(rows.values())
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the terms ({type(exc).__name__}).",
                                   "Nothing changed; try again.") from exc
        return [_term(r) for r in rows.values()]

    async def terms(self, owner: str) -> list[Term]:
        async with self._session() as s:
            rows = await s.scalars(select(TermRow).where(TermRow.owner == owner).order_by(TermRow.source_key))
            return [_term(r) for r in rows]

    async def for_user(self, username: str) -> tuple[Term, ...]:
        """The user's terms, then the shared ones whose source and language the user has not set."""
        async with self._session() as s:
            rows = (await s.scalars(select(TermRow).where(TermRow.owner.in_((username, SHARED))))).all()
        own = {(r.source_key, r.lang) for r in rows if r.owner == username}
        return tuple(_term(r) for r in sorted(rows, key=lambda r: r.owner != username)
                     if r.owner == username or (r.source_key, r.lang) not in own)
