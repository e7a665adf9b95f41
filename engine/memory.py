"""Translation memory: translations people approved, given back exactly and offered as references.

Two kinds of memory: the shared one (owner "", kept by admins) and each user's own. An entry is a
source and its target with their language codes, who added it, when, and how (typed, imported
from TMX, an approved answer). A text whose normalized form (case and whitespace folded) matches
an entry's source for the same target (and source language, when known) is answered from memory
without a model call; the user's own entry wins over a shared one. Otherwise the closest entry at
or above FUZZY_MIN (rapidfuzz's ratio) is offered to the version as a reference, never as the answer.

Entries live in the engine's database (table `memory_entries`, engine/migrations). Reading TMX and
scoring fuzzy matches run in the engine's CPU pool, in time linear in their input.
"""
from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from lxml import etree
from rapidfuzz import fuzz, process, utils
from sqlalchemy import DateTime, Integer, String, Text, UniqueConstraint, delete, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column
from translate.storage.tmx import tmxfile

from .errors import InvalidArgument, NotFound, StoreUnavailable
from .languages import NAMES
from .store import Base

SHARED = ""  # the owner of the shared memory
MAX_ENTRY_CHARS = 2000  # a source or a target: a paragraph, not a document
MAX_ENTRIES = 10_000  # per memory: a fuzzy lookup scores them all
MAX_TMX_BYTES = 5_000_000
FUZZY_MIN = 85.0  # rapidfuzz ratio (0-100) for a reference
ANY_TTL_S = 1.0
Origin = Literal["typed", "imported", "approved"]


class MemoryRow(Base):
    __tablename__ = "memory_entries"
    __table_args__ = (UniqueConstraint("owner", "src_lang", "tgt_lang", "source_key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    src_lang: Mapped[str] = mapped_column(String(16))
    tgt_lang: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    source_key: Mapped[str] = mapped_column(String(64))  # hash of the normalized source: exact lookups
    target: Mapped[str] = mapped_column(Text)
    added_by: Mapped[str] = mapped_column(String(128))
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    origin: Mapped[str] = mapped_column(String(16))


@dataclass(frozen=True)
class Entry:
    id: int
    owner: str  # "" for the shared memory
    src_lang: str
    tgt_lang: str
    source: str
    target: str
    added_by: str
    added_at: datetime
    origin: str

    @property
    def shared(self) -> bool:
        return self.owner == SHARED

    def provenance(self) -> str:
        """Where an answer from this entry came from, in words."""
        whose = "shared" if self.shared else "yours"
        how = {"imported": "imported", "approved": "approved"}.get(self.origin, "added")
        return f"From translation memory ({whose}, {how} by {self.added_by} on {self.added_at:%Y-%m-%d})"


@dataclass(frozen=True)
class Match:
    entry: Entry
    score: float  # 100 for an exact match


def normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def _key(text: str) -> str:
    return hashlib.sha256(normalized(text).encode()).hexdigest()


def _checked(text: str, what: str) -> str:
    text = text.strip()
    if not text:
        raise InvalidArgument(f"The {what} is empty.", "Write an entry as /tm add SOURCE = TARGET [for LANG].")
    if len(text) > MAX_ENTRY_CHARS:
        raise InvalidArgument(f"The {what} is {len(text)} characters long; the limit is {MAX_ENTRY_CHARS}.",
                              "Keep memory entries to a sentence or a paragraph.")
    return text


def check_lang(code: str, what: str) -> str:
    if code not in NAMES:
        raise InvalidArgument(f"'{code[:20]}' is not a {what} language code Baton knows.",
                              "Use a code such as en, fr, de or zh (GET /v1/translate/languages lists them).")
    return code


def _entry(row: MemoryRow) -> Entry:
    added = row.added_at if row.added_at.tzinfo else row.added_at.replace(tzinfo=UTC)
    return Entry(row.id, row.owner, row.src_lang, row.tgt_lang, row.source, row.target, row.added_by, added,
                 row.origin)


@dataclass(frozen=True)
class NewEntry:
    src_lang: str
    tgt_lang: str
    source: str
    target: str

    def checked(self) -> NewEntry:
        return NewEntry(check_lang(self.src_lang, "source"), check_lang(self.tgt_lang, "target"),
                        _checked(self.source, "source"), _checked(self.target, "target"))


def best_fuzzy(text: str, candidates: Sequence[Entry]) -> Match | None:
    """The candidate whose source is closest to `text`, at FUZZY_MIN or above (CPU-bound: run it in the pool)."""
    found = process.extractOne(text, [c.source for c in candidates], scorer=fuzz.ratio,
                               processor=utils.default_process, score_cutoff=FUZZY_MIN)
    return Match(candidates[found[2]], float(found[1])) if found is not None else None


class Memory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._session = async_sessionmaker(engine, expire_on_commit=False)
        # Whether any memory holds an entry, known until a moment: while none does (most servers),
        # a translation makes no lookup on its way to a version. Another replica's first entry is
        # seen within ANY_TTL_S.
        self._any, self._any_until = False, 0.0

    async def _holds_any(self) -> bool:
        if time.monotonic() >= self._any_until:
            async with self._session() as s:
                self._any = await s.scalar(select(MemoryRow.id).limit(1)) is not None
            self._any_until = time.monotonic() + ANY_TTL_S
        return self._any

    def _failed(self, exc: SQLAlchemyError) -> StoreUnavailable:
        return StoreUnavailable(f"The database refused the change ({type(exc).__name__}); nothing was changed.",
                                "Try again in a moment.")

    async def add(self, owner: str, entries: Sequence[NewEntry], *, by: str, origin: Origin) -> tuple[int, int]:
        """Add entries (an entry for the same source and languages is replaced), all or none.
        (added, replaced)."""
        checked = [e.checked() for e in entries]
        added = replaced = 0
        now = datetime.now(UTC)
        try:
            async with self._session.begin() as s:
                count = await s.scalar(select(func.count()).select_from(MemoryRow).where(MemoryRow.owner == owner))
                for e in checked:
                    row = await s.scalar(select(MemoryRow).where(
                        MemoryRow.owner == owner, MemoryRow.src_lang == e.src_lang, MemoryRow.tgt_lang == e.tgt_lang,
                        MemoryRow.source_key == _key(e.source)))
                    if row is None:
                        row = MemoryRow(owner=owner, src_lang=e.src_lang, tgt_lang=e.tgt_lang,
                                        source_key=_key(e.source))
                        s.add(row)
                        added += 1
                    else:
                        replaced += 1
                    row.source, row.target, row.added_by, row.added_at, row.origin = e.source, e.target, by, now, origin
                if (count or 0) + added > MAX_ENTRIES:
                    raise InvalidArgument(
                        f"That memory holds {count} entries; {added} more would pass its limit of {MAX_ENTRIES}.",
                        "Remove entries first (/tm remove), or import a smaller file. Nothing was added.")
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        self._any = self._any or bool(added)
        return added, replaced

    async def remove(self, owner: str, source: str, tgt_lang: str | None) -> int:
        """Remove the entries for `source` (into `tgt_lang`, or into every language); how many."""
        where = [MemoryRow.owner == owner, MemoryRow.source_key == _key(_checked(source, "source"))]
        if tgt_lang is not None:
            where.append(MemoryRow.tgt_lang == check_lang(tgt_lang, "target"))
        try:
            async with self._session.begin() as s:
                gone = await s.execute(delete(MemoryRow).where(*where))
        except SQLAlchemyError as exc:
            raise self._failed(exc) from exc
        count = int(getattr(gone, "rowcount", 0) or 0)
        if not count:
            raise NotFound(f"There is no entry for '{source[:80]}' in that memory.", "See the entries with /tm list.")
        return count

    async def entries(self, owner: str, containing: str | None = None, limit: int = MAX_ENTRIES) -> list[Entry]:
        q = select(MemoryRow).where(MemoryRow.owner == owner)
        if containing:
            q = q.where(func.lower(MemoryRow.source).contains(containing.lower(), autoescape=True))
        async with self._session() as s:
            rows = await s.scalars(q.order_by(MemoryRow.tgt_lang, MemoryRow.source).limit(limit))
            return [_entry(r) for r in rows]

    async def exact(self, user: str, src_lang: str, tgt_lang: str, text: str) -> Entry | None:
        """The entry for exactly this text (normalized): the user's own before the shared one."""
        if not await self._holds_any():
            return None
        q = select(MemoryRow).where(MemoryRow.owner.in_((user, SHARED)), MemoryRow.tgt_lang == tgt_lang,
                                    MemoryRow.source_key == _key(text))
        if src_lang:
            q = q.where(MemoryRow.src_lang == src_lang)
        async with self._session() as s:
            rows = (await s.scalars(q)).all()
        rows = sorted(rows, key=lambda r: (r.owner != user, -r.added_at.timestamp()))
        return _entry(rows[0]) if rows else None

    async def candidates(self, user: str, src_lang: str, tgt_lang: str) -> list[Entry]:
        """Entries a fuzzy match may come from (the user's and the shared ones for the pair)."""
        if not await self._holds_any():
            return []
        q = select(MemoryRow).where(MemoryRow.owner.in_((user, SHARED)), MemoryRow.tgt_lang == tgt_lang)
        if src_lang:
            q = q.where(MemoryRow.src_lang == src_lang)
        async with self._session() as s:
            return [_entry(r) for r in await s.scalars(q.limit(2 * MAX_ENTRIES))]


_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
_TRADITIONAL = ("zh-hant", "zh-tw", "zh-hk", "zh-mo")


def tmx_lang(value: str | None, line: int | None) -> str:
    """A TMX language tag (en-US, zh-TW, FR) as Baton's code."""
    tag = (value or "").strip().replace("_", "-").lower()
    if tag.startswith(_TRADITIONAL):
        return "zh-Hant"
    code = tag.split("-")[0]
    if code not in NAMES:
        raise InvalidArgument(f"Line {line}: the language '{(value or '')[:20]}' is not one Baton knows.",
                              "Use language codes such as en, fr-FR or zh-CN in xml:lang. Nothing was imported.")
    return code


def read_tmx(data: bytes) -> list[NewEntry]:
    """Every translation pair of a TMX file: each unit's source-language variant against each of
    its others. A malformed file is refused whole, with its line and reason (CPU-bound: run it in the pool)."""
    if len(data) > MAX_TMX_BYTES:
        raise InvalidArgument(f"The TMX file is {len(data):,} bytes; the limit is {MAX_TMX_BYTES:,}.",
                              "Split it into smaller files. Nothing was imported.")
    if b"<!ENTITY" in data:  # entity expansion can blow a small file up; TMX files have no need of it
        raise InvalidArgument("The TMX file declares XML entities, which Baton does not read.",
                              "Export it again without a DOCTYPE of entities. Nothing was imported.")
    try:
        store = tmxfile.parsestring(data)  # type: ignore[no-untyped-call]
    except etree.XMLSyntaxError as exc:
        raise InvalidArgument(f"Line {exc.lineno}: the TMX file is not well-formed XML ({exc.msg}).",
                              "Fix the file, or export it again from your tool. Nothing was imported.") from None
    header = store.document.getroot().find("header")
    src_tag = header.get("srclang") if header is not None else None
    found: list[NewEntry] = []
    for unit in store.units:
        tu = unit.xmlelement
        variants = [(tuv.get(_XML_LANG) or tuv.get("lang"), "".join(seg.itertext()) if seg is not None else "",
                     tuv.sourceline) for tuv in tu.iter("tuv") for seg in [tuv.find("seg")]]
        if len(variants) < 2:
            raise InvalidArgument(f"Line {tu.sourceline}: a translation unit needs a source and a translation.",
                                  "Give each <tu> two <tuv> elements or more. Nothing was imported.")
        own = tu.get("srclang") or src_tag
        src = next((v for v in variants if own and (v[0] or "").lower() == own.lower()), variants[0])
        src_lang = tmx_lang(src[0], src[2])
        for lang, text, line in variants:
            if (lang, text, line) == src:
                continue
            entry = NewEntry(src_lang, tmx_lang(lang, line), src[1], text)
            try:
                found.append(entry.checked())
            except InvalidArgument as exc:
                raise InvalidArgument(f"Line {line}: {exc.what}", f"{exc.fix} Nothing was imported.") from None
    if not found:
        raise InvalidArgument("The TMX file holds no translation unit.", "Export the memory again from your tool.")
    return found


def write_tmx(entries: Sequence[Entry]) -> bytes:
    """A TMX 1.4 file of the entries (translate-toolkit writes it)."""
    out = tmxfile(sourcelanguage=entries[0].src_lang if entries else "en")
    for e in entries:
        out.addtranslation(e.source, e.src_lang, e.target, e.tgt_lang)
    return bytes(out)
