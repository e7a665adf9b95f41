"""Prompt per version + streaming call through AsyncOpenAI, with attribution and timings."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import openai

from . import metrics
from .errors import BatonError, InvalidArgument
from .router import Route
from .types import VersionSpec

MAX_TEXT_CHARS = 4000


@dataclass(frozen=True)
class TranslationRequest:
    text: str
    target_lang: str
    source_lang: str = "auto"
    conversation_id: str = ""


@dataclass(frozen=True)
class TranslationResult:
    version: str
    role: str
    text: str
    ttft_ms: float
    total_ms: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    served_by: str  # the model name the backend itself reported
    failover_note: str = ""
    retranslated: str = ""  # why an earlier attempt was discarded and the answer translated again


@dataclass(frozen=True)
class Limits:
    first_token_s: float
    between_tokens_s: float


@dataclass(frozen=True)
class Restart:
    """An attempt failed after tokens reached the caller: discard them, a whole answer follows."""

    version: str
    reason: str


class BackendFailed(BatonError):
    """The backend failed this request: it died, hung, stalled, cut the answer, or refused it."""

    def __init__(self, what: str, fix: str, *, partial: bool, refused: bool = False) -> None:
        super().__init__(what, fix)
        self.partial = partial  # tokens already reached the caller
        self.refused = refused  # the backend rejected the request itself: a retry gets the same answer


def build_prompt(spec: VersionSpec, req: TranslationRequest) -> str:
    source = "the detected language" if req.source_lang in ("", "auto") else req.source_lang
    return spec.prompt_template.format(source_lang=source, target_lang=req.target_lang, text=req.text)


def _api_message(exc: openai.APIError) -> str:
    """vLLM's own words from an error body ({"error": {"message": ...}} or {"message": ...})."""
    body = exc.body if isinstance(exc.body, dict) else {}
    inner = body.get("error", body)
    message = inner.get("message") if isinstance(inner, dict) else None
    return str(message or exc.message)[:300]


def validate(req: TranslationRequest) -> None:
    if not req.text.strip():
        raise InvalidArgument("There is no text to translate.", "Type the text you want translated.")
    if len(req.text) > MAX_TEXT_CHARS:
        raise InvalidArgument(
            f"The text is {len(req.text)} characters long; the limit is {MAX_TEXT_CHARS}.",
            "Split it into shorter parts.",
        )


def _failed(name: str, why: str, pieces: list[str]) -> BackendFailed:
    return BackendFailed(f"Version {name} stopped answering ({why}).", "Please send your text again.",
                         partial=bool(pieces))


async def stream(route: Route, req: TranslationRequest, on_token: Callable[[str], Awaitable[None]],
                 limits: Limits) -> TranslationResult:
    """Stream one completion from the routed backend, under a lease and a stall deadline: no
    first token within `limits.first_token_s`, or no next one within `limits.between_tokens_s`,
    and the request gives up on this backend (and tells it so). A revoked lease (the backend
    crashed or hung) ends the wait at once."""
    backend = route.backend
    spec = backend.spec
    name = spec.name
    s = spec.sampling
    start = time.perf_counter()
    ttft = 0.0
    pieces: list[str] = []
    finish, usage, served_by = "", None, ""
    client = backend.client
    assert client is not None
    loop = asyncio.get_running_loop()
    metrics.IN_FLIGHT.labels(name).inc()
    try:
        with backend.traffic.lease() as lease:
            try:
                async with asyncio.timeout(limits.first_token_s) as deadline:
                    lease.bind(deadline)
                    response = await client.completions.create(
                        model=spec.served_name,
                        prompt=build_prompt(spec, req),
                        max_tokens=s.max_tokens,
                        temperature=s.temperature,
                        top_p=s.top_p,
                        stop=list(s.stop) or None,
                        stream=True,
                        stream_options={"include_usage": True},
                    )
                    async with response:  # closing it on cancel aborts the generation in vLLM
                        async for chunk in response:
                            served_by = chunk.model or served_by
                            if chunk.usage:
                                usage = chunk.usage
                            for choice in chunk.choices:
                                if choice.text:
                                    if not pieces:
                                        ttft = time.perf_counter() - start
                                    pieces.append(choice.text)
                                    await on_token(choice.text)
                                    deadline.reschedule(loop.time() + limits.between_tokens_s)
                                if choice.finish_reason:
                                    finish = choice.finish_reason
            except TimeoutError:
                if lease.revoked:
                    raise _failed(name, lease.revoked, pieces) from None
                why = (f"no token for {limits.between_tokens_s:g} s" if pieces
                       else f"no first token within {limits.first_token_s:g} s")
                backend.report_stall(f"a request stalled: {why}")
                raise _failed(name, f"stalled: {why}", pieces) from None
    except BackendFailed:
        backend.traffic.errors += 1
        metrics.REQUESTS.labels(name, "failed").inc()
        raise
    except openai.APIError as exc:
        backend.traffic.errors += 1
        metrics.REQUESTS.labels(name, "failed").inc()
        # A 400 is about the request itself (e.g. its length against the context): say vLLM's
        # reason, and a retry would only get the same answer.
        if isinstance(exc, openai.BadRequestError):
            raise BackendFailed(
                f"Version {name} refused the request: {_api_message(exc)}",
                f"Ask an operator to check the recipe of {name} (its sampling and --max-model-len) "
                f"with /status and /logs {name}.",
                partial=bool(pieces), refused=True,
            ) from exc
        lost = "connection lost" if isinstance(exc, openai.APIConnectionError) else type(exc).__name__
        raise _failed(name, lost, pieces) from exc
    except asyncio.CancelledError:
        metrics.REQUESTS.labels(name, "cancelled").inc()
        raise
    finally:
        metrics.IN_FLIGHT.labels(name).dec()
    if not finish:
        backend.traffic.errors += 1
        metrics.REQUESTS.labels(name, "truncated").inc()
        raise _failed(name, "the answer ended early", pieces)
    backend.traffic.served += 1
    metrics.REQUESTS.labels(name, "ok").inc()
    metrics.TTFT.labels(name).observe(ttft)
    return TranslationResult(
        version=name,
        role=route.role,
        text="".join(pieces),
        ttft_ms=ttft * 1000,
        total_ms=(time.perf_counter() - start) * 1000,
        prompt_tokens=usage.prompt_tokens if usage else 0,
        completion_tokens=usage.completion_tokens if usage else len(pieces),
        finish_reason=finish,
        served_by=served_by,
        failover_note=route.failover_note,
    )
