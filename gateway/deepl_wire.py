"""DeepL's wire format, for every /v2 route: failures as `{"message"}` with DeepL's statuses, the
key in `Authorization: DeepL-Auth-Key KEY`, fields from a JSON body (the official library) or a
form (older clients, `text` repeated), and DeepL's language codes turned into a Baton pair."""

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from admin import languages
from admin.keys import ApiKey

from . import deepl_languages as codes
from .auth import Auth
from .errors import ApiError, ErrorShapedRoute

M = TypeVar("M", bound=BaseModel)
FORMALITY_IGNORED = "ignored: no version has a formality template"


class DeepLRoute(ErrorShapedRoute):
    """Failures as DeepL sends them: `{"message"}`, and 403 where Baton's own API says 401."""

    @staticmethod
    def shaped(err: ApiError) -> Response:
        return JSONResponse({"message": err.message}, status_code=403 if err.status == 401 else err.status,
                            headers=err.headers)


def key_of(auth: Auth) -> Callable[[Request], Awaitable[ApiKey]]:
    """A FastAPI dependency: the caller's Baton key, sent as DeepL sends its keys."""

    async def deepl_key(request: Request) -> ApiKey:
        return await auth.sent_as(request, "DeepL-Auth-Key", ApiError(
            403, "No API key was sent. Send `Authorization: DeepL-Auth-Key KEY` with a Baton API key; an admin "
                 "makes keys with `/keys add NAME` in the chat.", "missing_api_key"))

    return deepl_key


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


async def fields(request: Request) -> dict[str, Any]:
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


def valid(model: type[M], fields: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None  # the route says which fields, in DeepL's shape


def pair(source: str | None, target: str) -> languages.Pair:
    return languages.Pair(codes.baton_code(source, "source") if source else languages.AUTO,
                          codes.baton_code(target, "target"))


def formality(body: TranslateFields) -> dict[str, str]:
    """A header saying a formality was asked for and not applied (none of the versions can)."""
    return {"X-Baton-Formality": FORMALITY_IGNORED} if body.formality not in (None, "default") else {}
