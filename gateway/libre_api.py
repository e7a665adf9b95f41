"""LibreTranslate's API under /libretranslate/, for the tools that speak it (Mastodon, Weblate,
libretranslatepy, browser extensions) with Baton's keys, router and versions behind it.

As LibreTranslate does: the key is `api_key` in the JSON or form body; answers and errors are in
its shapes (`{"error": "..."}`; 403 for a missing or wrong key, 429 for too many wrong ones, 400
for bad input); /languages and /frontend/settings need no key. As Baton does: the texts of one
request are translated by one version (the `X-Baton-Version` header names it), formats and HTML
are kept piece by piece, and a file is translated whole by one version, then kept for a while
behind an unguessable link for the key that sent it.
"""
from __future__ import annotations

import mimetypes
import uuid
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile

from admin import languages
from admin.keys import ApiKey, Keys
from admin.render import translated_name
from engine import Engine, TranslationRequest, detect
from engine.detect import Detection
from engine.documents import KINDS
from engine.languages import LANGUAGES, NAMES
from engine.translate import MAX_TEXT_CHARS

from . import metrics, translating
from .auth import Auth
from .config import GatewayConfig
from .downloads import Downloads
from .errors import ApiError, ErrorShapedRoute

PREFIX = "/libretranslate"
LANGUAGE_FIX = f"Use a code from GET {PREFIX}/languages, such as fr, de or zh."
# Room for a multipart body's boundaries and small fields around the largest document.
FORM_OVERHEAD_BYTES = 64_000
FRONTEND_TIMEOUT_MS = 500  # LibreTranslate's default: how long its page waits after typing
M = TypeVar("M", bound=BaseModel)


def _shape(err: ApiError) -> JSONResponse:
    """LibreTranslate's error body; a missing or wrong key is its 403 (OpenAI's 401)."""
    return JSONResponse({"error": err.message}, status_code=403 if err.status == 401 else err.status,
                        headers=err.headers)


class LibreRoute(ErrorShapedRoute):
    shaped = staticmethod(_shape)


class Keyed(BaseModel):
    model_config = ConfigDict(extra="ignore")

    api_key: str | None = Field(None, description="A Baton API key (`/keys add NAME`).")


class TranslateFields(Keyed):
    q: str | list[str] = Field(description="A text, or an array of texts (answered with an array).")
    source: str = Field("auto", description='A language code, or "auto" to detect it.')
    target: str = Field(description="A language code (GET /libretranslate/languages).")
    format: Literal["text", "html"] = Field("text", description="Markup and entities are kept either way.")
    alternatives: int = Field(0, ge=0, description="Accepted; Baton gives none (an empty list).")


class DetectFields(Keyed):
    q: str = Field(min_length=1, description="The text whose language to detect.")


class FileFields(Keyed):
    """What /translate_file reads from its multipart form (for the schema: the form is read as it comes)."""

    file: bytes = Field(description="The document: " + ", ".join(sorted(KINDS)) + ".")
    source: str = Field("auto", description='A language code, or "auto" to detect it.')
    target: str = Field(description="A language code.")


def _body(model: type[BaseModel], media: str = "application/json") -> dict[str, Any]:
    """The documented request body of a route that reads its body itself (JSON or form)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {
        media: {"schema": schema},
        **({"application/x-www-form-urlencoded": {"schema": schema}} if media == "application/json" else {})}}}


def _valid(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None


def _detected(found: Detection | None) -> dict[str, Any]:
    """LibreTranslate's detectedLanguage: confidence 0-100, and "en" at 0 when nothing was found."""
    if found is None:
        return {"language": "en", "confidence": 0.0}
    return {"language": found.code, "confidence": round(found.confidence * 100, 1)}


def router(get_engine: Callable[[], Engine], get_keys: Callable[[], Keys], auth: Auth,
           config: GatewayConfig) -> APIRouter:
    api = APIRouter(prefix=PREFIX, route_class=LibreRoute, tags=["libretranslate"])
    downloads = Downloads(config.downloads_kept, config.downloads_per_key, config.download_ttl_s)

    class FileRoute(LibreRoute):
        max_body_bytes = config.document_max_bytes + FORM_OVERHEAD_BYTES

    async def fields(request: Request) -> dict[str, Any]:
        """The body's fields, from JSON (Mastodon, Weblate) or a form (libretranslatepy)."""
        if "json" in request.headers.get("content-type", ""):
            try:
                data = await request.json()
            except (ValueError, RecursionError):  # RecursionError: arrays nested thousands deep
                data = None
            if not isinstance(data, dict):
                raise ApiError(400, "The body is not a JSON object. Send {\"q\": ..., \"target\": ..., "
                                    "\"api_key\": ...}.", "invalid_json")
            return data
        form = await request.form(max_files=1, max_fields=16)
        return {k: v for k, v in form.items()}

    async def caller(request: Request, sent: dict[str, Any]) -> ApiKey:
        secret = sent.get("api_key")
        if not isinstance(secret, str) or not secret.strip():
            metrics.AUTH_FAILURES.labels("missing").inc()
            raise ApiError(403, "No API key was sent. Send it as api_key in the request (Mastodon: "
                                "LIBRE_TRANSLATE_API_KEY); an admin makes keys with `/keys add NAME` in the chat "
                                "or `baton keys add NAME`.", "missing_api_key")
        return await auth.verified(request, secret.strip())

    @api.post("/translate", summary="LibreTranslate: translate a text or an array of texts",
              openapi_extra=_body(TranslateFields))
    async def translate(request: Request) -> JSONResponse:
        sent = await fields(request)
        key = await caller(request, sent)
        body = _valid(TranslateFields, sent)
        batch = isinstance(body.q, list)
        texts = body.q if isinstance(body.q, list) else [body.q]
        if not texts or not all(texts):
            raise ApiError(400, "Invalid request: q is empty. Send the text to translate in q (a string, or an "
                                "array of non-empty strings).", "invalid_request")
        if len(texts) > config.translate_max_texts:
            raise ApiError(400, f"Invalid request: {len(texts)} texts in q; the limit is "
                                f"{config.translate_max_texts}. Split them over several requests.", "too_many_texts")
        pair = translating.language_pair(body.source, body.target, LANGUAGE_FIX)
        translating.check_texts(texts)
        engine = get_engine()
        translating.serving(engine)
        results = await translating.translate_texts(
            engine, translating.Batch(texts, pair, f"libretranslate-{uuid.uuid4()}", user=key.actor),
            config.translate_concurrency)
        answer: dict[str, Any] = {"translatedText": [r.text for r in results] if batch else results[0].text}
        if pair.source == languages.AUTO:
            found = [_detected(r.detected) for r in results]
            answer["detectedLanguage"] = found if batch else found[0]
        if body.alternatives:
            answer["alternatives"] = [[] for _ in texts] if batch else []
        return JSONResponse(answer, headers=translating.answered_by(results))

    @api.post("/detect", summary="LibreTranslate: detect the language of a text", openapi_extra=_body(DetectFields))
    async def detect_language(request: Request) -> list[dict[str, Any]]:
        sent = await fields(request)
        key = await caller(request, sent)
        body = _valid(DetectFields, sent)
        found = await get_engine().cpu.run(key.actor, partial(detect.detect, body.q))
        return [_detected(found)]

    @api.get("/languages", summary="LibreTranslate: the languages, each with the targets it can go to")
    async def languages_list() -> list[dict[str, Any]]:
        codes = [code for code, _ in LANGUAGES]
        return [{"code": code, "name": name, "targets": [c for c in codes if c != code]} for code, name in LANGUAGES]

    @api.get("/frontend/settings", summary="LibreTranslate: the settings its web page reads")
    async def frontend_settings() -> dict[str, Any]:
        target = languages.DEFAULT_TARGET
        return {"charLimit": MAX_TEXT_CHARS, "frontendTimeout": FRONTEND_TIMEOUT_MS, "apiKeys": True,
                "keyRequired": True, "suggestions": False, "filesTranslation": True,
                "supportedFilesFormat": sorted(KINDS),
                "language": {"source": {"code": languages.AUTO, "name": "Auto Detect"},
                             "target": {"code": target, "name": NAMES[target]}}}

    async def translate_file(request: Request) -> JSONResponse:
        sent = await fields(request)
        key = await caller(request, sent)
        upload = sent.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ApiError(400, "Invalid request: no file. Send the document as the multipart field file, with "
                                f"source and target ({', '.join(sorted(KINDS))}).", "invalid_request")
        source, target = sent.get("source"), sent.get("target")
        pair = translating.language_pair(source if isinstance(source, str) else None,
                                         target if isinstance(target, str) else "", LANGUAGE_FIX)
        engine = get_engine()
        translating.serving(engine)
        doc = await engine.open_document(upload.filename, await upload.read(), user=key.actor)
        req = TranslationRequest(doc.segments[0], pair.target_name, pair.source_name, f"libretranslate-{uuid.uuid4()}")
        done: list[str | None] = []
        result = await engine.translate_document(doc, req, done, _no_progress)
        name = translated_name(doc.filename, pair.target)
        data, _ = await engine.rebuild_document(doc, done, name, user=key.actor)
        token = downloads.put(key.name, name, data)
        url = str(request.url_for("libretranslate_download", token=token))
        return JSONResponse({"translatedFileUrl": url}, headers={"X-Baton-Version": result.version})

    api.add_api_route("/translate_file", translate_file, methods=["POST"], route_class_override=FileRoute,
                      summary="LibreTranslate: translate a document; the answer links to the translated file",
                      openapi_extra=_body(FileFields, "multipart/form-data"))

    @api.get("/download_file/{token}", name="libretranslate_download",
             summary="LibreTranslate: a translated file, while it is kept, unless its key was revoked")
    async def download(token: str) -> Response:
        kept = downloads.get(token)
        if kept is None or not any(k.name == kept.owner and k.revoked_at is None for k in await get_keys().list()):
            raise ApiError(404, "This file is not kept any more (or never was). Translate it again with "
                                f"POST {PREFIX}/translate_file.", "not_found")
        media = mimetypes.guess_type(kept.filename)[0] or "application/octet-stream"
        return Response(kept.data, media_type=media,
                        headers={"Content-Disposition": f"attachment; filename*=utf-8''{quote(kept.filename)}"})

    return api


async def _no_progress(_: int, __: int) -> None:
    """The client waits for the whole file."""
