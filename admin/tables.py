"""What the admin stores (accounts, API keys, votes, glossaries) share: their tables live in the
engine's database, each store's on its own declarative base; engine/migrations creates them."""
from __future__ import annotations

from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker
from sqlalchemy.orm import DeclarativeBase


class Tables:
    base: ClassVar[type[DeclarativeBase]]  # the store's own tables (tests compare them with the migrations)

    def __init__(self, engine: AsyncEngine) -> None:
        self._session = async_sessionmaker(engine, expire_on_commit=False)
