"""The translation memory on the admin API: the shared memory's entries, TMX in and out.

The same actions as the chat's `/tm shared ...`, for an admin key; every change is audited with the
key as the actor (engine.Engine.memory_*).
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from pydantic import BaseModel, Field

from admin import shield
from admin.keys import ApiKey
from engine import MEMORY_SHARED, Engine, MemoryEntry, NewMemoryEntry
from engine.memory import MAX_ENTRY_CHARS, MAX_TMX_BYTES

from .auth import Auth
from .errors import ApiError, ErrorShapedRoute

TMX_MEDIA = "application/x-tmx+xml"


class MemoryEntryBody(BaseModel):
    source: str = Field(min_length=1, max_length=MAX_ENTRY_CHARS)
    target: str = Field(min_length=1, max_length=MAX_ENTRY_CHARS)
    source_lang: str = Field(description="A language code, e.g. en.")
    target_lang: str = Field(description="A language code, e.g. fr.")


class MemoryAdded(BaseModel):
    added: int
    replaced: int


class MemoryRemoved(BaseModel):
    removed: int


def router(get_engine: Callable[[], Engine], auth: Auth) -> APIRouter:
    api = APIRouter(prefix="/admin/v1/memory", route_class=ErrorShapedRoute, tags=["translation memory"])
    Admin = Annotated[ApiKey, Depends(auth.admin)]

    @api.get("", summary="The shared memory's entries (those whose source contains `containing`)")
    async def entries(key: Admin, containing: Annotated[str | None, Query(max_length=200)] = None,
                      limit: Annotated[int, Query(ge=1, le=10_000)] = 100) -> list[MemoryEntry]:
        return await get_engine().memory.entries(MEMORY_SHARED, containing, limit)

    @api.post("", status_code=status.HTTP_201_CREATED, summary="Add entries to the shared memory, all or none")
    async def add(body: list[MemoryEntryBody], key: Admin) -> MemoryAdded:
        if not body:
            raise ApiError(400, "No entry was sent. Send a list of {source, target, source_lang, target_lang}.",
                           "no_entries")
        news = [NewMemoryEntry(e.source_lang, e.target_lang, e.source, e.target) for e in body]
        added, replaced = await shield.to_completion(get_engine().memory_add(MEMORY_SHARED, news, actor=key.actor))
        return MemoryAdded(added=added, replaced=replaced)

    @api.delete("", summary="Remove the shared memory's entries for a source text (into one language, or all)")
    async def remove(key: Admin, source: Annotated[str, Query(min_length=1, max_length=MAX_ENTRY_CHARS)],
                     target_lang: Annotated[str | None, Query(max_length=16)] = None) -> MemoryRemoved:
        removed = await shield.to_completion(
            get_engine().memory_remove(MEMORY_SHARED, source, target_lang, actor=key.actor))
        return MemoryRemoved(removed=removed)

    @api.post("/import", status_code=status.HTTP_201_CREATED,
              summary=f"Import a TMX file (the request body, {TMX_MEDIA}) into the shared memory, whole or not at all")
    async def import_tmx(request: Request, key: Admin) -> MemoryAdded:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_TMX_BYTES:
                raise ApiError(413, f"The TMX file is over {MAX_TMX_BYTES:,} bytes. Split it; nothing was imported.",
                               "too_large")
        added, replaced = await shield.to_completion(
            get_engine().memory_import(MEMORY_SHARED, bytes(data), actor=key.actor))
        return MemoryAdded(added=added, replaced=replaced)

    @api.get("/export", summary="The shared memory as a TMX 1.4 file", response_class=Response,
             responses={200: {"content": {TMX_MEDIA: {}}}})
    async def export_tmx(key: Admin) -> Response:
        return Response(await get_engine().memory_export(MEMORY_SHARED), media_type=TMX_MEDIA,
                        headers={"Content-Disposition": 'attachment; filename="shared-memory.tmx"'})

    return api
