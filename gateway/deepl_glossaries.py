"""DeepL's glossaries at /v2/glossaries, on Baton's named glossaries (admin/named_glossaries.py):
anyone with a key lists, reads and uses them; only an admin key creates or deletes one, each
change audited as the chat's glossary changes are. Entries come as TSV or CSV, one a line."""

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from admin import languages
from admin.glossary import MAX_TERMS
from admin.keys import ApiKey
from admin.named_glossaries import Named, NamedGlossaries
from engine import BatonError, Engine, InvalidArgument, NotFound, Term

from . import deepl_languages as codes
from .auth import Auth
from .deepl_wire import DeepLRoute, fields, valid
from .errors import MAX_BODY_BYTES, ApiError


class GlossaryFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=256)
    source_lang: str = Field(max_length=16)
    target_lang: str = Field(max_length=16)
    entries: str = Field(max_length=MAX_BODY_BYTES)
    entries_format: Literal["tsv", "csv"] = "tsv"


def _entries(text: str, kind: str) -> list[tuple[str, str]]:
    """A glossary's (source, target) entries: one a line, TSV or CSV (DeepL's CSV may add the two
    languages as third and fourth columns); a duplicate source is refused, as DeepL does."""
    if text.count("\n") > 2 * MAX_TERMS:  # refused before any parsing: a glossary holds at most MAX_TERMS
        raise InvalidArgument(f"The glossary has more than {MAX_TERMS} entries.", "Split it over several glossaries.")
    rows = (csv.reader(io.StringIO(text)) if kind == "csv"
            else (line.split("\t") for line in text.splitlines()))
    entries: dict[str, tuple[str, str]] = {}
    for n, row in enumerate(rows, 1):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) not in ((2, 4) if kind == "csv" else (2,)):
            sep = "a comma" if kind == "csv" else "a tab"
            raise InvalidArgument(f"Entry {n} of the glossary is not a source and a target separated by {sep}.",
                                  f"Write one entry a line: SOURCE{',' if kind == 'csv' else '<tab>'}TARGET.")
        source, target = row[0].strip(), row[1].strip()
        if source.casefold() in entries:
            raise InvalidArgument(f"Entry {n} of the glossary repeats the source term '{source[:100]}'.",
                                  "Keep one entry for each source term.")
        entries[source.casefold()] = (source, target)
    return list(entries.values())


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # DeepL's form; stored times are UTC


def _glossary(g: Named) -> dict[str, object]:
    return {"glossary_id": g.id, "name": g.name, "ready": True, "source_lang": codes.glossary_code(g.source_lang),
            "target_lang": codes.glossary_code(g.target_lang), "creation_time": _time(g.created_at),
            "entry_count": len(g.terms)}


async def terms_for(store: NamedGlossaries, glossary_id: str | None, pair: languages.Pair) -> tuple[Term, ...]:
    """The named glossary's terms for this pair; 400 when it is unknown or for another pair."""
    if glossary_id is None:
        return ()
    try:
        g = await store.get(glossary_id)
    except NotFound as exc:
        raise ApiError(400, str(exc), "unknown_glossary") from None
    wanted = (codes.glossary_code(g.source_lang), codes.glossary_code(g.target_lang))
    asked = (codes.glossary_code(pair.source), codes.glossary_code(pair.target))
    if asked != wanted:
        raise ApiError(400, f"The glossary '{g.name}' is for {wanted[0].upper()} → {wanted[1].upper()}; the "
                            f"request is {asked[0].upper()} → {asked[1].upper()}. Name the glossary's "
                            "source_lang and a target_lang of its language.", "glossary_pair")
    return tuple(Term(t.source, t.target) for t in g.terms)


def router(get_engine: Callable[[], Engine], auth: Auth, key_of: Callable[[Request], Awaitable[ApiKey]],
           store: Callable[[], NamedGlossaries]) -> APIRouter:
    api = APIRouter(route_class=DeepLRoute, include_in_schema=False)
    Key = Annotated[ApiKey, Depends(key_of)]

    @api.get("/glossary-language-pairs")
    async def glossary_pairs(key: Key) -> dict[str, object]:
        return {"supported_languages": codes.glossary_pairs()}

    @api.post("/glossaries", status_code=201)
    async def create_glossary(request: Request, key: Key) -> Response:
        await auth.require_admin(request, key, "may use and read glossaries, not create them")
        body = valid(GlossaryFields, await fields(request))
        args = {"name": body.name[:128], "source_lang": body.source_lang, "target_lang": body.target_lang}
        engine = get_engine()
        try:
            made = await store().create(
                body.name, codes.baton_code(codes.glossary_code(body.source_lang), "source"),
                codes.baton_code(codes.glossary_code(body.target_lang), "target"),
                _entries(body.entries, body.entries_format), created_by=key.actor)
        except BatonError as exc:
            await engine.record(key.actor, "glossary-create", args, "refused", str(exc))
            raise
        await engine.record(key.actor, "glossary-create", {**args, "id": made.id}, "ok",
                            f"{len(made.terms)} entries")
        return JSONResponse(_glossary(made), status_code=201)

    @api.get("/glossaries")
    async def list_glossaries(key: Key) -> dict[str, object]:
        return {"glossaries": [_glossary(g) for g in await store().list()]}

    @api.get("/glossaries/{glossary_id}")
    async def get_glossary(glossary_id: str, key: Key) -> dict[str, object]:
        return _glossary(await store().get(glossary_id))

    @api.get("/glossaries/{glossary_id}/entries")
    async def glossary_entries(glossary_id: str, key: Key) -> Response:
        g = await store().get(glossary_id)
        return Response("".join(f"{t.source}\t{t.target}\n" for t in g.terms),
                        media_type="text/tab-separated-values; charset=utf-8")

    @api.delete("/glossaries/{glossary_id}", status_code=204)
    async def delete_glossary(request: Request, glossary_id: str, key: Key) -> Response:
        await auth.require_admin(request, key, "may use and read glossaries, not delete them")
        engine = get_engine()
        try:
            gone = await store().delete(glossary_id)
        except BatonError as exc:
            await engine.record(key.actor, "glossary-delete", {"id": glossary_id[:64]}, "refused", str(exc))
            raise
        await engine.record(key.actor, "glossary-delete", {"id": gone.id, "name": gone.name}, "ok",
                            f"{len(gone.terms)} entries")
        return Response(status_code=204)

    return api
