"""Characters translated per API key and calendar month (UTC): the `key_usage` table.

The translation APIs count what a key had translated (its source texts' characters, as DeepL
bills them) once the translation is done, and DeepL's /v2/usage reads it back. A key's monthly
limit, when one exists, is checked against this count.
"""
from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, String, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import StoreUnavailable

from .tables import Tables


class _Base(DeclarativeBase):
    pass


class UsageRow(_Base):
    __tablename__ = "key_usage"
    key_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    month: Mapped[str] = mapped_column(String(7), primary_key=True)  # "2026-12"
    characters: Mapped[int] = mapped_column(BigInteger, default=0)


def this_month(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m")


class Usage(Tables):
    base = _Base

    async def add(self, key_name: str, characters: int, month: str | None = None) -> None:
        """Count `characters` more for the key this month. Two replicas counting at once both land:
        an update adds to the row in the database; the first of a month inserts it, and an insert
        that lost the race becomes an update."""
        if characters <= 0:
            return
        month = month or this_month()
        add = (update(UsageRow).where(UsageRow.key_name == key_name, UsageRow.month == month)
               .values(characters=UsageRow.characters + characters))
        try:
            for _ in range(2):
                async with self._session.begin() as s:
                    if getattr(await s.execute(add), "rowcount", 0):
                        return
                try:
                    async with self._session.begin() as s:
                        s.add(UsageRow(key_name=key_name, month=month, characters=characters))
                    return
                except IntegrityError:
                    continue  # another replica inserted the row first: add to it
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the usage count ({type(exc).__name__}).",
                                   "The translation was made; its characters are not counted.") from exc

    async def characters(self, key_name: str, month: str | None = None) -> int:
        async with self._session() as s:
            count = await s.scalar(select(UsageRow.characters).where(UsageRow.key_name == key_name,
                                                                      UsageRow.month == (month or this_month())))
        return int(count or 0)
