"""The chat history's data layer: Chainlit's SQL data layer with every query's values bound.

Chainlit 2.12's `SQLAlchemyDataLayer.get_all_user_threads` pastes the ids of a user's threads into
its `IN (...)` clauses as text. A thread id is whatever the browser sent at connect, so a chosen
id (`zz') UNION ALL SELECT ... FROM accounts ...`) turned a user's own thread list into a read of
the whole database. Here the same query binds its ids (an expanding parameter), and a thread id
that is not a UUID is refused at the socket's connect (`check_thread_id`), before anything is
stored: two layers, so neither alone has to be perfect.
"""
from __future__ import annotations

import json
import logging
import uuid
from typing import Any, cast

import socketio
from chainlit.data.sql_alchemy import SQLAlchemyDataLayer
from chainlit.element import ElementDict
from chainlit.step import StepDict
from chainlit.types import FeedbackDict, ThreadDict
from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

log = logging.getLogger("baton.history")

BAD_THREAD_ID = "That chat cannot be opened: its id is not a valid thread id. Start a new chat."


def check_thread_id(thread_id: object) -> None:
    """A thread id a client may name: none, or a UUID in its canonical text form (what Chainlit
    itself makes). Raises ValueError with the message for the client otherwise."""
    if thread_id in (None, ""):
        return
    if not isinstance(thread_id, str) or len(thread_id) != 36:
        raise ValueError(BAD_THREAD_ID)
    try:
        canonical = str(uuid.UUID(thread_id))
    except ValueError:
        raise ValueError(BAD_THREAD_ID) from None
    if canonical != thread_id.lower():
        raise ValueError(BAD_THREAD_ID)


_THREADS = text("""
    SELECT t."id" AS id, t."createdAt" AS "createdAt", t."name" AS name, t."userId" AS "userId",
           t."userIdentifier" AS "userIdentifier", t."tags" AS tags, t."metadata" AS metadata,
           MAX(s."createdAt") AS updated
    FROM threads t LEFT JOIN steps s ON t."id" = s."threadId"
    WHERE t."userId" = :user_id OR t."id" = :thread_id
    GROUP BY t."id", t."createdAt", t."name", t."userId", t."userIdentifier", t."tags", t."metadata"
    ORDER BY updated DESC NULLS LAST
    LIMIT :limit
""")
_STEPS = text("""
    SELECT s.*, f."value" AS feedback_value, f."comment" AS feedback_comment, f."id" AS feedback_id
    FROM steps s LEFT JOIN feedbacks f ON s."id" = f."forId"
    WHERE s."threadId" IN :ids
    ORDER BY s."createdAt" ASC
""").bindparams(bindparam("ids", expanding=True))
_ELEMENTS = text("""SELECT e.* FROM elements e WHERE e."threadId" IN :ids""").bindparams(
    bindparam("ids", expanding=True))


class HistoryDataLayer(SQLAlchemyDataLayer):
    """Chainlit's data layer, with the thread query bound, and a user message's composer modes
    (the From/To pickers, a dict) stored as JSON: Chainlit 2.12 binds the dict as it is, which
    SQLite and asyncpg refuse, and the user's message would be missing from the history."""

    async def create_step(self, step_dict: StepDict) -> None:
        if isinstance(modes := step_dict.get("modes"), dict):
            step_dict = cast(StepDict, {**step_dict, "modes": json.dumps(modes)})
        await super().create_step(step_dict)

    async def get_all_user_threads(self, user_id: str | None = None,
                                   thread_id: str | None = None) -> list[ThreadDict] | None:
        """The user's threads (newest first, at most `user_thread_limit`), or the one thread
        `thread_id`, each with its steps (and their feedback) and elements, as Chainlit's gives them."""
        async with self.async_session() as session:
            threads = await self._rows(session, _THREADS, {"user_id": user_id, "thread_id": thread_id,
                                                           "limit": self.user_thread_limit})
            if not threads:
                return []
            ids = [t["id"] for t in threads]
            steps = await self._rows(session, _STEPS, {"ids": ids})
            elements = await self._rows(session, _ELEMENTS, {"ids": ids})
        by_id = {t["id"]: ThreadDict(id=t["id"], createdAt=t["createdAt"], name=t["name"], userId=t["userId"],
                                     userIdentifier=t["userIdentifier"], tags=t["tags"], metadata=t["metadata"],
                                     steps=[], elements=[]) for t in threads}
        for s in steps:
            if (thread := by_id.get(s["threadId"])) is not None:
                thread["steps"].append(_step(s))
        for e in elements:
            if (thread := by_id.get(e["threadId"])) is not None:
                thread["elements"] = [*(thread["elements"] or []), await self._element(e)]
        return list(by_id.values())

    async def _rows(self, session: AsyncSession, query: TextClause, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows = (await session.execute(query, params)).mappings().all()
        # ids as text (asyncpg gives UUID objects), as Chainlit's own queries give them
        return [{k: str(v) if isinstance(v, uuid.UUID) else v for k, v in r.items()} for r in rows]

    async def _element(self, e: dict[str, Any]) -> ElementDict:
        url, key = e["url"], e["objectKey"]
        if self.storage_provider is not None and isinstance(key, str) and key.strip():
            try:
                url = await self.storage_provider.get_read_url(object_key=key)
            except Exception as exc:  # noqa: BLE001 - as Chainlit: the stored URL still serves
                log.warning("no read URL for a history file (%s); the stored one is used", exc)
        return cast(ElementDict, {
            "id": e["id"], "threadId": e["threadId"], "type": e["type"], "chainlitKey": e["chainlitKey"], "url": url,
            "objectKey": key, "name": e["name"], "display": e["display"], "size": e["size"],
            "language": e["language"], "autoPlay": e["autoPlay"], "playerConfig": e["playerConfig"],
            "page": e["page"], "props": e["props"] if e["props"] is not None else "{}", "forId": e["forId"],
            "mime": e["mime"]})


def _step(s: dict[str, Any]) -> StepDict:
    feedback = None
    if s["feedback_value"] is not None:
        feedback = FeedbackDict(forId=s["id"], id=s["feedback_id"], value=s["feedback_value"],
                                comment=s["feedback_comment"])
    shown = s["showInput"] not in (None, "false")
    return StepDict(
        id=s["id"], name=s["name"], type=s["type"], threadId=s["threadId"], parentId=s["parentId"],
        streaming=bool(s["streaming"]), waitForAnswer=s["waitForAnswer"], isError=s["isError"],
        metadata=s["metadata"] if s["metadata"] is not None else {}, tags=s["tags"],
        input=(s["input"] or "") if shown else "", output=s["output"] or "", createdAt=s["createdAt"],
        start=s["start"], end=s["end"], generation=s["generation"], showInput=s["showInput"],
        language=s["language"], feedback=feedback)


def refuse_bad_thread_ids(sio: socketio.AsyncServer) -> None:
    """Check the thread id a client names at connect before Chainlit's own connect handler runs:
    Chainlit would keep it as the session's thread id and store it with the first message."""
    import chainlit.socket  # noqa: F401 - registers Chainlit's handler, which is wrapped here

    chainlit_connect = sio.handlers["/"]["connect"]

    async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> Any:
        try:
            check_thread_id(auth.get("threadId") if isinstance(auth, dict) else None)
        except ValueError as exc:
            raise socketio.exceptions.ConnectionRefusedError(str(exc)) from None
        return await chainlit_connect(sid, environ, auth)

    sio.on("connect", connect)
