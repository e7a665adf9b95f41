"""What goes to a backend (a translation prompt from the version's template, or a client's own
completion or chat request) and the streaming call (engine/backend_http.py), with stall deadlines,
attribution and timings."""
from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from . import formats, metrics, templates, terminology
from .backend_http import BackendError, Event
from .checks import Flag
from .detect import Detection
from .errors import BatonError, InvalidArgument
from .languages import CODES
from .router import Route
from .templates import Capability, Needs
from .terminology import Term
from .types import Sampling, VersionSpec

MAX_TEXT_CHARS = 4000


@dataclass(frozen=True)
class TranslationRequest:
    text: str
    target_lang: str
    source_lang: str = "auto"
    conversation_id: str = ""
    version: str | None = None  # pinned to this version (no failover, not in live stats): an evaluation
    terms: tuple[Term, ...] = ()  # glossary terms; those that occur in the text go to a terminology template
    context: str = ""  # earlier turns, for a contextual template: context, never translated itself
    user: str = ""  # whose translation memory applies (beside the shared one)
    use_memory: bool = True  # False: always ask a model, even for a text the memory has

    def needs(self) -> Needs:
        return Needs(self.terms, self.context, formatted=not formats.is_plain(self.text))

    def about(self, text: str) -> TranslationRequest:
        """This request for `text` (all of its text, a piece or a segment), with only the glossary
        terms that occur there."""
        return replace(self, text=text, terms=terminology.relevant(self.terms, text, CODES.get(self.target_lang, "")))


@dataclass(frozen=True)
class CompletionRequest:
    """A client's own OpenAI request, routed like a translation: a prompt (completions) or chat
    messages, with sampling that overrides the version's defaults within its caps."""

    prompt: str | None = None
    messages: tuple[Mapping[str, Any], ...] = ()
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    options: Mapping[str, Any] = field(default_factory=dict)  # seed, penalties: passed as given
    conversation_id: str = ""
    version: str | None = None  # pinned to this version (no failover); None: routed


@dataclass(frozen=True)
class BackendRequest:
    """Exactly what one attempt sends to the version it was routed to."""

    sampling: Sampling
    prompt: str | None = None
    messages: tuple[Mapping[str, Any], ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chunk:
    """One streamed chunk: its text, and the backend's own chunk for a caller that relays it."""

    text: str
    finish_reason: str | None
    event: Event  # the backend's bytes of this chunk, parsed, and when they arrived


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
    # What the translator sees besides the text (filled in by Engine.translate):
    source_lang: str = ""  # the source language's name the prompt used, given or detected
    target_lang: str = ""
    detected: Detection | None = None  # when the source was detected
    capability: str = Capability.PLAIN.value  # the template that was used
    note: str = ""  # a template the version lacked
    terms: tuple[Term, ...] = ()  # the glossary terms the answer should contain
    missing_terms: tuple[Term, ...] = ()
    format_lost: tuple[str, ...] = ()  # formatting that did not survive
    flags: tuple[Flag, ...] = ()  # what the answer checks found (None of them: a clean answer)
    checked: bool = False  # a translation whose answer was checked
    memory: str = ""  # answered from translation memory: where the entry came from (no model was asked)
    reference: str = ""  # a close memory entry given to the version as a reference: where it came from


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


def choice(spec: VersionSpec, req: TranslationRequest) -> templates.Choice:
    return templates.choose(spec.name, spec.prompt_template, spec.templates, req.needs())


def build_prompt(spec: VersionSpec, req: TranslationRequest) -> str:
    source = "the detected language" if req.source_lang in ("", "auto") else req.source_lang
    needs = req.needs()
    chosen = templates.choose(spec.name, spec.prompt_template, spec.templates, needs)
    return templates.fill(chosen, spec.templates, source_lang=source, target_lang=req.target_lang, text=req.text,
                          needs=needs)


def for_translation(req: TranslationRequest) -> Callable[[VersionSpec], BackendRequest]:
    """Each version's own prompt templates and sampling: switching a version switches its prompt."""
    return lambda spec: BackendRequest(spec.sampling, prompt=build_prompt(spec, req))


def for_completion(req: CompletionRequest) -> Callable[[VersionSpec], BackendRequest]:
    """The client's sampling over the version's defaults; max_tokens never above the version's cap."""

    def build(spec: VersionSpec) -> BackendRequest:
        d = spec.sampling
        cap = d.max_tokens
        asked = req.max_tokens
        sampling = Sampling(
            temperature=d.temperature if req.temperature is None else req.temperature,
            top_p=d.top_p if req.top_p is None else req.top_p,
            max_tokens=min(asked, cap) if asked is not None and cap is not None else asked or cap,
            stop=d.stop if req.stop is None else req.stop,
        )
        return BackendRequest(sampling, req.prompt, req.messages, req.options)

    return build


def _request(model: str, r: BackendRequest) -> tuple[str, dict[str, Any]]:
    """The path and JSON body of one attempt; unset sampling goes as null (the backend's default)."""
    s = r.sampling
    body: dict[str, Any] = {"model": model, "max_tokens": s.max_tokens, "temperature": s.temperature,
                            "top_p": s.top_p, "stop": list(s.stop) or None, "stream": True,
                            "stream_options": {"include_usage": True}, **r.options}
    if r.messages:
        return "/chat/completions", {**body, "messages": list(r.messages)}
    return "/completions", {**body, "prompt": r.prompt or ""}


def _pieces(data: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(text, finish_reason) of each choice, for completion and chat chunks alike."""
    for choice in data.get("choices") or ():
        delta = choice.get("delta")
        text = (delta.get("content") if delta is not None else choice.get("text")) or ""
        yield text, choice.get("finish_reason")


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


async def stream(route: Route, req: BackendRequest, on_chunk: Callable[[Chunk], Awaitable[None]],
                 limits: Limits) -> TranslationResult:
    """Stream one completion from the routed backend, under a lease and a stall deadline: no
    first token within `limits.first_token_s`, or no next one within `limits.between_tokens_s`,
    and the request gives up on this backend (and tells it so). A revoked lease (the backend
    crashed or hung) ends the wait at once."""
    backend = route.backend
    spec = backend.spec
    name = spec.name
    start = time.perf_counter()
    ttft = 0.0
    pieces: list[str] = []
    finish, served_by = "", ""
    usage: Mapping[str, Any] | None = None
    client = backend.client
    assert client is not None
    loop = asyncio.get_running_loop()
    metrics.IN_FLIGHT.labels(name).inc()
    try:
        with backend.traffic.lease() as lease:
            try:
                async with asyncio.timeout(limits.first_token_s) as deadline:
                    lease.bind(deadline)
                    # Closing the stream (on cancel too) closes the connection: vLLM aborts the generation.
                    async with client.stream(*_request(spec.served_name, req)) as events:
                        async for event in events:
                            data = event.data
                            served_by = data.get("model") or served_by
                            if data.get("usage"):
                                usage = data["usage"]
                            if not data.get("choices"):
                                await on_chunk(Chunk("", None, event))
                            for text, finish_reason in _pieces(data):
                                if text:  # counted before the caller sees it: a cut from here on is partial
                                    ttft = ttft or time.perf_counter() - start
                                    pieces.append(text)
                                await on_chunk(Chunk(text, finish_reason, event))
                                if text:  # the deadline restarts once the caller has taken the text
                                    deadline.reschedule(loop.time() + limits.between_tokens_s)
                                if finish_reason:
                                    finish = finish_reason
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
    except (BackendError, aiohttp.ClientError) as exc:
        backend.traffic.errors += 1
        metrics.REQUESTS.labels(name, "failed").inc()
        # A 400 is about the request itself (e.g. its length against the context): say vLLM's
        # reason, and a retry would only get the same answer.
        if isinstance(exc, BackendError) and exc.status == 400:
            raise BackendFailed(
                f"Version {name} refused the request: {exc.message}",
                f"Ask an operator to check the recipe of {name} (its sampling and --max-model-len) "
                f"with /status and /logs {name}.",
                partial=bool(pieces), refused=True,
            ) from exc
        lost = ("connection lost" if isinstance(exc, aiohttp.ClientError) else
                f"HTTP {exc.status}: {exc.message}" if exc.status else f"it reported: {exc.message}")
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
        prompt_tokens=int(usage.get("prompt_tokens") or 0) if usage else 0,
        completion_tokens=int(usage.get("completion_tokens") or 0) if usage else len(pieces),
        finish_reason=finish,
        served_by=served_by,
        failover_note=route.failover_note,
    )
