"""Users' thumbs up and down on translations, counted for the version that gave each one.

Chainlit's feedback route stores a vote on whatever step id a logged-in user names, without
checking whose step it is, and a client can write a step of any type and metadata over the
websocket. So what a vote counts for comes from Baton's own record, written by the server when it
sends an answer (`answer_votes`): only a translation Baton gave this user can be rated, and it
holds one vote, which a changed vote replaces (the live rate counts each answer's latest vote).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import Engine, NotFound, StoreUnavailable

from .tables import Tables


class _Base(DeclarativeBase):
    pass


class AnswerRow(_Base):
    __tablename__ = "answer_votes"
    # The id the chat's feedback buttons name: the run (Chainlit's on_message step) of the answer.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    username: Mapped[str] = mapped_column(String(64), index=True)
    thread_id: Mapped[str] = mapped_column(String(64))
    feedback_id: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)  # Chainlit's row
    vote: Mapped[int | None] = mapped_column(Integer, nullable=True)  # 1 up, 0 down, NULL none
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class Ballot:
    """A user's answer, about to be voted on."""

    answer: str
    version: str
    thread_id: str
    feedback_id: str | None  # the row holding its vote, which the new vote updates


def _ballot(row: AnswerRow | None, username: str) -> Ballot:
    if row is None or row.username != username:
        raise NotFound("Only the translations in your own conversations can be rated.",
                       "Rate a translation Baton gave you.")
    return Ballot(row.id, row.version, row.thread_id, row.feedback_id)


class Votes(Tables):
    base = _Base

    async def answered(self, answer: str, version: str, username: str, thread_id: str) -> None:
        """Baton sent `username` an answer from `version`: it may be rated from now on."""
        try:
            async with self._session.begin() as s:
                s.add(AnswerRow(id=answer, version=version, username=username, thread_id=thread_id))
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the answer's record ({type(exc).__name__}).",
                                   "Votes on this answer will not count.") from exc

    async def ballot(self, answer: str, username: str) -> Ballot:
        """`username`'s answer `answer`; NotFound for anything else (another's, a command's reply, a forged id)."""
        async with self._session() as s:
            return _ballot(await s.get(AnswerRow, answer[:64]), username)

    async def ballot_of(self, feedback_id: str, username: str) -> Ballot:
        """The answer whose vote Chainlit keeps in row `feedback_id`, if it is `username`'s."""
        async with self._session() as s:
            return _ballot(await s.scalar(select(AnswerRow).where(AnswerRow.feedback_id == feedback_id[:64])),
                           username)

    async def cast(self, engine: Engine, ballot: Ballot, feedback_id: str | None, up: bool | None) -> None:
        """Keep the vote the answer now holds (None: taken back) and tell the engine when it changed:
        the same vote again (e.g. with a comment) is not counted twice."""
        value = None if up is None else int(up)
        try:
            async with self._session.begin() as s:
                row = await s.get_one(AnswerRow, ballot.answer)
                before, row.vote, row.feedback_id = row.vote, value, feedback_id
        except SQLAlchemyError as exc:
            raise StoreUnavailable(f"The database refused the vote's record ({type(exc).__name__}).",
                                   "The vote is kept but not counted; vote again later.") from exc
        if before != value:
            engine.feedback(ballot.version, up, answer=ballot.answer)
