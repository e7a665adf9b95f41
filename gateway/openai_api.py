"""OpenAI-compatible inference on /v1, through the same router, leases and failover as the chat."""

import time
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Response

from admin import languages
from admin.keys import ApiKey
from engine import CompletionRequest, Engine, Health, Term, TranslationResult

from . import translating
from .auth import Auth
from .config import GatewayConfig
from .errors import ApiError, ErrorShapedRoute
from .relay import Relay
from .schemas import (
    AnswerFlag,
    ChatBody,
    CompletionBody,
    GlossaryTerm,
    SamplingFields,
    TranslateBody,
    TranslateResult,
    Translation,
)

Conversation = Annotated[str | None, Header(alias="X-Baton-Conversation", max_length=256)]


LANGUAGE_FIX = "Use a code such as fr, de or zh (GET /v1/translate/languages lists them all)."


def router(get_engine: Callable[[], Engine], auth: Auth, config: GatewayConfig) -> APIRouter:
    api = APIRouter(prefix="/v1", route_class=ErrorShapedRoute, tags=["inference"])
    Key = Annotated[ApiKey, Depends(auth.key)]

    def pinned(health: Health, key: ApiKey, model: str | None) -> str | None:
        """None for the alias (routed); a version name only for an admin key."""
        if model in (None, config.model_alias):
            return None
        if model in health.states:
            if not key.is_admin:
                raise ApiError(403, f"Only an admin key may address version '{model}' directly. Ask for "
                                    f"'{config.model_alias}' to get the version that is serving.", "admin_key_required")
            return model
        raise ApiError(404, f"The model '{str(model)[:64]}' does not exist. Ask for '{config.model_alias}': "
                            "whichever version is serving answers.", "model_not_found")

    def completion(body: SamplingFields, key: ApiKey, conversation: str | None, *, prompt: str | None = None,
                   messages: tuple[dict[str, str], ...] = (), max_tokens: int | None = None) -> CompletionRequest:
        return CompletionRequest(
            prompt=prompt, messages=messages, temperature=body.temperature, top_p=body.top_p,
            max_tokens=max_tokens or body.max_tokens, stop=body.stops(), options=body.options(),
            conversation_id=conversation or body.user or "",
            version=pinned(translating.serving(get_engine()), key, body.model))

    @api.get("/models", summary="The alias, and for an admin key every ready version")
    async def models(key: Key) -> dict[str, Any]:
        engine = get_engine()
        health = engine.health()
        created = int(time.time())
        data = [{"id": config.model_alias, "object": "model", "created": created, "owned_by": "baton",
                 "root": health.deployment.active}]
        if key.is_admin:
            data += [{"id": name, "object": "model", "created": created, "owned_by": "baton", "root": name,
                      "state": state} for name, state in sorted(health.states.items())]
        return {"object": "list", "data": data}

    @api.post("/completions", summary="OpenAI completions, streamed (SSE) or whole")
    async def completions(body: CompletionBody, key: Key, conversation: Conversation = None) -> Response:
        req = completion(body, key, conversation, prompt=body.prompt)
        relay = Relay(get_engine(), req, key.name, resumable=not body.stream)
        return await (relay.stream(body.include_usage) if body.stream else relay.whole(chat=False))

    @api.post("/chat/completions", summary="OpenAI chat completions, streamed (SSE) or whole")
    async def chat_completions(body: ChatBody, key: Key, conversation: Conversation = None) -> Response:
        req = completion(body, key, conversation, messages=tuple(m.plain() for m in body.messages),
                         max_tokens=body.max_completion_tokens or body.max_tokens)
        relay = Relay(get_engine(), req, key.name, resumable=not body.stream)
        return await (relay.stream(body.include_usage) if body.stream else relay.whole(chat=True))

    @api.post("/translate", summary="Translate texts with each version's own prompt template")
    async def translate(body: TranslateBody, key: Key, conversation: Conversation = None) -> TranslateResult:
        if len(body.text) > config.translate_max_texts:
            raise ApiError(413, f"{len(body.text)} texts in one request; the limit is {config.translate_max_texts}. "
                                "Split them over several requests.", "too_many_texts")
        pair = translating.language_pair(body.source_lang, body.target_lang, LANGUAGE_FIX)
        engine = get_engine()
        if pinned(translating.serving(engine), key, body.model) is not None:
            raise ApiError(400, "/v1/translate always uses the serving version; to evaluate one version, use "
                                "/v1/completions with its name as the model.", "pinned_translate")
        translating.check_texts(body.text)
        batch = translating.Batch(body.text, pair, conversation or f"translate-{uuid.uuid4()}",
                                  tuple(Term(t.source, t.target) for t in body.glossary), body.context,
                                  user=key.actor, use_memory=body.use_memory)
        results = await translating.translate_texts(engine, batch, config.translate_concurrency)
        return TranslateResult(translations=[_translation(r) for r in results], source_lang=pair.source,
                               target_lang=pair.target)

    @api.get("/translate/languages", summary="The language codes /v1/translate accepts")
    async def translate_languages(key: Key) -> dict[str, str]:
        return dict(languages.LANGUAGES)

    return api


def _translation(result: TranslationResult) -> Translation:
    found = result.detected
    return Translation(text=result.text, version=result.version, detected_source_lang=found.code if found else None,
                       detected_confidence=round(found.confidence, 3) if found else None,
                       template=result.capability, note=result.note,
                       missing_terms=[GlossaryTerm(source=t.source, target=t.target) for t in result.missing_terms],
                       format_lost=list(result.format_lost),
                       flags=[AnswerFlag(check=f.check, message=f.message) for f in result.flags],
                       memory=result.memory or None)
