"""DeepL's API v2 at /v2/, so DeepL's clients (the official `deepl` library with `server_url`,
Weblate, CAT tools) use Baton unchanged: translate, languages, usage, documents here, glossaries
in gateway/deepl_glossaries.py, the wire format in gateway/deepl_wire.py.

Keys are Baton's API keys, checked and throttled as on /v1 (gateway/auth.py). Texts go through
the same engine calls as /v1/translate (gateway/translating.py) and documents through the
chat's (gateway/deepl_documents.py); the version that answered is in `X-Baton-Version`.
"""

import logging
import uuid
from collections.abc import Callable
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from admin.keys import ApiKey
from admin.named_glossaries import NamedGlossaries
from admin.usage import Usage
from engine import BatonError, Engine, TranslationRequest, shown_name

from . import deepl_glossaries
from . import deepl_languages as codes
from .auth import Auth
from .config import GatewayConfig
from .deepl_documents import DocumentJobs, Job
from .deepl_wire import DeepLRoute, TranslateFields, fields, formality, key_of, pair, valid
from .errors import ApiError
from .translating import Batch, answered_by, translate_texts

log = logging.getLogger("baton.gateway")
MAX_TEXTS = 50  # DeepL's own limit per request
# Some room for the multipart form around an uploaded file of the largest size the engine takes.
FORM_ROOM = 100_000


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

    deepl_key = key_of(auth)
    Key = Annotated[ApiKey, Depends(deepl_key)]

    async def counted(key_name: str, characters: int) -> None:
        try:
            await stores.usage.add(key_name, characters)
        except BatonError as exc:  # the translation stands; only its count is missing
            log.warning("usage of key %s not counted: %s", key_name, exc)

    async def documents_done(job: Job) -> None:
        await counted(job.key_name, job.characters)

    jobs = DocumentJobs(get_engine, config, documents_done)

    @api.post("/translate")
    async def translate(request: Request, key: Key) -> Response:
        body = valid(TranslateFields, await fields(request))
        if len(body.text) > MAX_TEXTS:
            raise ApiError(400, f"{len(body.text)} texts in one request; the limit is {MAX_TEXTS}. Split them over "
                                "several requests.", "too_many_texts")
        if empty := [i for i, t in enumerate(body.text) if not t.strip()]:
            raise ApiError(400, f"text[{empty[0]}] is empty. Send only texts that have something to translate.",
                           "empty_text")
        langs = pair(body.source_lang, body.target_lang)
        terms = await deepl_glossaries.terms_for(stores.glossaries, body.glossary_id, langs)
        batch = Batch(body.text, langs, f"deepl-{uuid.uuid4()}", terms, body.context, user=key.actor)
        results = await translate_texts(get_engine(), batch, config.translate_concurrency)
        await counted(key.name, sum(len(t) for t in body.text))
        given = codes.deepl_source(langs.source) if body.source_lang else ""
        out = [{"detected_source_language": given or (codes.deepl_source(r.detected.code) if r.detected else ""),
                "text": r.text, "billed_characters": len(t)} for r, t in zip(results, body.text, strict=True)]
        return JSONResponse({"translations": out},
                            headers={**answered_by(results), **formality(body)})

    @api.api_route("/languages", methods=["GET", "POST"])
    async def languages_(request: Request, key: Key) -> Response:
        kind = (await fields(request)).get("type", "source")
        if kind not in ("source", "target"):
            raise ApiError(400, f"type must be source or target, not '{str(kind)[:20]}'.", "invalid_type")
        return JSONResponse(codes.sources() if kind == "source" else codes.targets())

    @api.api_route("/usage", methods=["GET", "POST"])
    async def usage(key: Key) -> dict[str, int]:
        # No key has a monthly limit yet: the largest count DeepL's clients read is the limit, so
        # they see usage and never a limit reached.
        return {"character_count": await stores.usage.characters(key.name), "character_limit": 10**12}

    async def upload(request: Request, key: Key) -> Response:
        sent = await fields(request)
        file = sent.get("file")
        if not isinstance(file, UploadFile):
            raise ApiError(400, "No file was sent. Send the document as the multipart field `file`.", "missing_file")
        body = valid(TranslateFields, {**sent, "text": ["-"]})  # the same language and glossary fields
        langs = pair(body.source_lang, body.target_lang)
        terms = await deepl_glossaries.terms_for(stores.glossaries, body.glossary_id, langs)
        name = shown_name(str(sent.get("filename") or file.filename or ""))
        kind = name.rpartition(".")[2].lower()
        if (wanted := str(sent.get("output_format") or kind).lower()) != kind:
            raise ApiError(400, f"Baton cannot turn a .{kind[:10]} file into .{wanted[:10]}: the translation comes "
                                "back in the document's own format. Leave output_format out.", "output_format")
        data = await file.read()
        engine = get_engine()
        doc = await engine.open_document(name, data, user=key.name)
        if not doc.segments:
            raise ApiError(400, f"{doc.filename} has no text to translate. Send a document with some text in it.",
                           "empty_document")
        req = TranslationRequest(doc.segments[0], langs.target_name, langs.source_name, terms=terms)
        stem, dot, ext = name.rpartition(".")
        job, document_key = jobs.submit(key.name, doc, req, f"{stem}.{langs.target}.{ext}" if dot else name)
        return JSONResponse({"document_id": job.id, "document_key": document_key}, headers=formality(body))

    class UploadRoute(DeepLRoute):
        max_body_bytes = config.document_max_bytes + FORM_ROOM

    api.add_api_route("/document", upload, methods=["POST"], route_class_override=UploadRoute)

    async def found(request: Request, document_id: str, key: ApiKey) -> Job:
        document_key = (await fields(request)).get("document_key")
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

    api.include_router(deepl_glossaries.router(get_engine, auth, deepl_key, lambda: stores.glossaries))
    return api
