"""DeepL's API v2 at /v2/, so DeepL's clients (the official `deepl` library with `server_url`,
Weblate, CAT tools) use Baton unchanged: translate, languages, usage, glossaries, documents.

Keys are Baton's API keys, sent as `Authorization: DeepL-Auth-Key KEY`, checked and throttled as
on /v1 (gateway/auth.py); answers that are not a success are DeepL's `{"message": ...}` with
DeepL's statuses (a wrong key is 403). Texts go through the same engine calls as /v1/translate
(gateway/translating.py) and documents through the chat's (gateway/deepl_documents.py); the
version that answered is in `X-Baton-Version`. Anyone with a key may use and read glossaries;
only an admin key creates or deletes one (audited as the chat's glossary changes are).
"""

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from starlette.datastructures import UploadFile

from admin import languages
from admin.glossary import MAX_TERMS
from admin.keys import ApiKey
from admin.named_glossaries import Named, NamedGlossaries
from admin.usage import Usage
from engine import BatonError, Engine, InvalidArgument, NotFound, Term, TranslationRequest, shown_name

from . import deepl_languages as codes
from .auth import Auth
from .config import GatewayConfig
from .deepl_documents import DocumentJobs, Job
from .errors import MAX_BODY_BYTES, ApiError, ErrorShapedRoute
from .translating import translate_texts, versions_of

M = TypeVar("M", bound=BaseModel)
log = logging.getLogger("baton.gateway")
MAX_TEXTS = 50  # DeepL's own limit per request
FORMALITY_IGNORED = "ignored: no version has a formality template"
# Some room for the multipart form around an uploaded file of the largest size the engine takes.
FORM_ROOM = 100_000


class DeepLRoute(ErrorShapedRoute):
    """Failures as DeepL sends them: `{"message"}`, and 403 where Baton's own API says 401."""

    @staticmethod
    def shaped(err: ApiError) -> Response:
        return JSONResponse({"message": err.message}, status_code=403 if err.status == 401 else err.status,
                            headers=err.headers)


class TranslateFields(BaseModel):
    model_config = ConfigDict(extra="ignore")  # DeepL's fields Baton has no use for (outline_detection, ...)

    text: list[str] = Field(min_length=1)
    target_lang: str = Field(max_length=16)
    source_lang: str | None = Field(default=None, max_length=16)
    context: str = Field(default="", max_length=10_000)
    glossary_id: str | None = Field(default=None, max_length=64)
    tag_handling: Literal["html", "xml"] | None = None
    preserve_formatting: bool | None = None  # Baton keeps the text's formatting anyway
    split_sentences: Literal["0", "1", "nonewlines"] | None = None  # each text is translated whole
    formality: Literal["default", "more", "less", "prefer_more", "prefer_less"] | None = None

    @field_validator("text", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @field_validator("split_sentences", mode="before")
    @classmethod
    def _as_text(cls, value: object) -> object:
        return str(int(value)) if isinstance(value, bool | int) else value


class GlossaryFields(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(max_length=256)
    source_lang: str = Field(max_length=16)
    target_lang: str = Field(max_length=16)
    entries: str = Field(max_length=MAX_BODY_BYTES)
    entries_format: Literal["tsv", "csv"] = "tsv"


async def _fields(request: Request) -> dict[str, Any]:
    """The request's fields, from a JSON body (the official library) or a form (older clients,
    `text` repeated), and the query string; `text` always as a list."""
    fields: dict[str, Any] = dict(request.query_params)
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError:
            raise ApiError(400, "The body is not valid JSON.", "invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The JSON body must be an object of fields.", "invalid_json")
        return {**fields, **body}
    form = await request.form()
    for name, value in form.multi_items():
        if name == "text":
            fields.setdefault("text", []).append(value)
        else:
            fields[name] = value
    return fields


def _valid(model: type[M], fields: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None  # the route says which fields, in DeepL's shape


def _pair(source: str | None, target: str) -> languages.Pair:
    return languages.Pair(codes.baton_code(source, "source") if source else languages.AUTO,
                          codes.baton_code(target, "target"))


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


def formality(body: TranslateFields) -> dict[str, str]:
    """A header saying a formality was asked for and not applied (none of the versions can)."""
    return {"X-Baton-Formality": FORMALITY_IGNORED} if body.formality not in (None, "default") else {}


def _time(when: datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"  # DeepL's form; stored times are UTC


def _glossary(g: Named) -> dict[str, object]:
    return {"glossary_id": g.id, "name": g.name, "ready": True, "source_lang": codes.glossary_code(g.source_lang),
            "target_lang": codes.glossary_code(g.target_lang), "creation_time": _time(g.created_at),
            "entry_count": len(g.terms)}


class _Stores:
    """The usage and named-glossary stores, on the engine's database once the engine has started."""

    def __init__(self, get_engine: Callable[[], Engine]) -> None:
        self._get_engine = get_engine
        self._for: Engine | None = None
        self._usage: Usage | None = None
        self._glossaries: NamedGlossaries | None = None

    def _ready(self) -> tuple[Usage, NamedGlossaries]:
        engine = self._get_engine()
        if self._for is not engine or self._usage is None or self._glossaries is None:
            self._for, self._usage = engine, Usage(engine.store.engine)
            self._glossaries = NamedGlossaries(engine.store.engine)
        return self._usage, self._glossaries

    @property
    def usage(self) -> Usage:
        return self._ready()[0]

    @property
    def glossaries(self) -> NamedGlossaries:
        return self._ready()[1]


def router(get_engine: Callable[[], Engine], auth: Auth, config: GatewayConfig) -> APIRouter:
    api = APIRouter(prefix="/v2", route_class=DeepLRoute, tags=["deepl"], include_in_schema=False)
    stores = _Stores(get_engine)

    async def deepl_key(request: Request) -> ApiKey:
        scheme, _, secret = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "deepl-auth-key" or not secret.strip():
            raise ApiError(403, "No API key was sent. Send `Authorization: DeepL-Auth-Key KEY` with a Baton API "
                                "key; an admin makes keys with `/keys add NAME` in the chat.", "missing_api_key")
        return await auth.verified(request, secret.strip())

    Key = Annotated[ApiKey, Depends(deepl_key)]

    async def counted(key_name: str, characters: int) -> None:
        try:
            await stores.usage.add(key_name, characters)
        except BatonError as exc:  # the translation stands; only its count is missing
            log.warning("usage of key %s not counted: %s", key_name, exc)

    async def documents_done(job: Job) -> None:
        await counted(job.key_name, job.characters)

    jobs = DocumentJobs(get_engine, config, documents_done)

    async def glossary_terms(glossary_id: str | None, pair: languages.Pair) -> tuple[Term, ...]:
        """The named glossary's terms for this pair; 400 when it is unknown or for another pair."""
        if glossary_id is None:
            return ()
        try:
            g = await stores.glossaries.get(glossary_id)
        except NotFound as exc:
            raise ApiError(400, str(exc), "unknown_glossary") from None
        wanted = (codes.glossary_code(g.source_lang), codes.glossary_code(g.target_lang))
        asked = (codes.glossary_code(pair.source), codes.glossary_code(pair.target))
        if asked != wanted:
            raise ApiError(400, f"The glossary '{g.name}' is for {wanted[0].upper()} → {wanted[1].upper()}; the "
                                f"request is {asked[0].upper()} → {asked[1].upper()}. Name the glossary's "
                                "source_lang and a target_lang of its language.", "glossary_pair")
        return tuple(Term(t.source, t.target) for t in g.terms)

    @api.post("/translate")
    async def translate(request: Request, key: Key) -> Response:
        body = _valid(TranslateFields, await _fields(request))
        if len(body.text) > MAX_TEXTS:
            raise ApiError(400, f"{len(body.text)} texts in one request; the limit is {MAX_TEXTS}. Split them over "
                                "several requests.", "too_many_texts")
        if empty := [i for i, t in enumerate(body.text) if not t.strip()]:
            raise ApiError(400, f"text[{empty[0]}] is empty. Send only texts that have something to translate.",
                           "empty_text")
        pair = _pair(body.source_lang, body.target_lang)
        terms = await glossary_terms(body.glossary_id, pair)
        results = await translate_texts(get_engine(), body.text, pair, terms=terms, context=body.context,
                                        concurrency=config.translate_concurrency)
        await counted(key.name, sum(len(t) for t in body.text))
        given = codes.deepl_source(pair.source) if body.source_lang else ""
        out = [{"detected_source_language": given or (codes.deepl_source(r.detected.code) if r.detected else ""),
                "text": r.text, "billed_characters": len(t)} for r, t in zip(results, body.text, strict=True)]
        return JSONResponse({"translations": out},
                            headers={"X-Baton-Version": versions_of(results), **formality(body)})

    @api.api_route("/languages", methods=["GET", "POST"])
    async def languages_(request: Request, key: Key) -> Response:
        kind = (await _fields(request)).get("type", "source")
        if kind not in ("source", "target"):
            raise ApiError(400, f"type must be source or target, not '{str(kind)[:20]}'.", "invalid_type")
        return JSONResponse(codes.sources() if kind == "source" else codes.targets())

    @api.api_route("/usage", methods=["GET", "POST"])
    async def usage(key: Key) -> dict[str, int]:
        # No key has a monthly limit yet: the largest count DeepL's clients read is the limit, so
        # they see usage and never a limit reached.
        return {"character_count": await stores.usage.characters(key.name), "character_limit": 10**12}

    @api.get("/glossary-language-pairs")
    async def glossary_pairs(key: Key) -> dict[str, object]:
        return {"supported_languages": codes.glossary_pairs()}

    @api.post("/glossaries", status_code=201)
    async def create_glossary(request: Request, key: Key) -> Response:
        await auth.require_admin(request, key, "may use and read glossaries, not create them")
        body = _valid(GlossaryFields, await _fields(request))
        args = {"name": body.name[:128], "source_lang": body.source_lang, "target_lang": body.target_lang}
        engine = get_engine()
        try:
            made = await stores.glossaries.create(
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
        return {"glossaries": [_glossary(g) for g in await stores.glossaries.list()]}

    @api.get("/glossaries/{glossary_id}")
    async def get_glossary(glossary_id: str, key: Key) -> dict[str, object]:
        return _glossary(await stores.glossaries.get(glossary_id))

    @api.get("/glossaries/{glossary_id}/entries")
    async def glossary_entries(glossary_id: str, key: Key) -> Response:
        g = await stores.glossaries.get(glossary_id)
        return Response("".join(f"{t.source}\t{t.target}\n" for t in g.terms),
                        media_type="text/tab-separated-values; charset=utf-8")

    @api.delete("/glossaries/{glossary_id}", status_code=204)
    async def delete_glossary(request: Request, glossary_id: str, key: Key) -> Response:
        await auth.require_admin(request, key, "may use and read glossaries, not delete them")
        engine = get_engine()
        try:
            gone = await stores.glossaries.delete(glossary_id)
        except BatonError as exc:
            await engine.record(key.actor, "glossary-delete", {"id": glossary_id[:64]}, "refused", str(exc))
            raise
        await engine.record(key.actor, "glossary-delete", {"id": gone.id, "name": gone.name}, "ok",
                            f"{len(gone.terms)} entries")
        return Response(status_code=204)

    async def upload(request: Request, key: Key) -> Response:
        fields = await _fields(request)
        file = fields.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "No file was sent. Send the document as the multipart field `file`.", "missing_file")
        body = _valid(TranslateFields, {**fields, "text": ["-"]})  # the same language and glossary fields
        pair = _pair(body.source_lang, body.target_lang)
        terms = await glossary_terms(body.glossary_id, pair)
        name = shown_name(str(fields.get("filename") or file.filename or ""))
        kind = name.rpartition(".")[2].lower()
        if (wanted := str(fields.get("output_format") or kind).lower()) != kind:
            raise ApiError(400, f"Baton cannot turn a .{kind[:10]} file into .{wanted[:10]}: the translation comes "
                                "back in the document's own format. Leave output_format out.", "output_format")
        data = await file.read()
        engine = get_engine()
        doc = await engine.open_document(name, data, user=key.name)
        if not doc.segments:
            raise ApiError(400, f"{doc.filename} has no text to translate. Send a document with some text in it.",
                           "empty_document")
        req = TranslationRequest(doc.segments[0], pair.target_name, pair.source_name, terms=terms)
        stem, dot, ext = name.rpartition(".")
        job, document_key = jobs.submit(key.name, doc, req, f"{stem}.{pair.target}.{ext}" if dot else name)
        return JSONResponse({"document_id": job.id, "document_key": document_key}, headers=formality(body))

    class UploadRoute(DeepLRoute):
        max_body_bytes = config.document_max_bytes + FORM_ROOM

    api.add_api_route("/document", upload, methods=["POST"], route_class_override=UploadRoute)

    async def found(request: Request, document_id: str, key: ApiKey) -> Job:
        document_key = (await _fields(request)).get("document_key")
        if not isinstance(document_key, str) or not document_key:
            raise ApiError(400, "No document_key was sent. Send the one POST /v2/document returned.",
                           "missing_document_key")
        return jobs.find(document_id, key.name, document_key)

    @api.post("/document/{document_id}")
    async def document_status(request: Request, document_id: str, key: Key) -> Response:
        job = await found(request, document_id, key)
        status: dict[str, object] = {"document_id": job.id, "status": job.status}
        if (left := job.seconds_remaining()) is not None:
            status["seconds_remaining"] = left
        if job.status == "done":
            status["billed_characters"] = job.characters
        if job.error:
            status["error_message"] = job.error
        return JSONResponse(status, headers={"X-Baton-Version": job.version} if job.version else None)

    @api.post("/document/{document_id}/result")
    async def document_result(request: Request, document_id: str, key: Key) -> Response:
        job = await found(request, document_id, key)
        data = jobs.take(job)
        disposition = f"attachment; filename*=UTF-8''{quote(job.filename)}"
        return Response(data, media_type="application/octet-stream",
                        headers={"X-Baton-Version": job.version, "Content-Disposition": disposition})

    return api
