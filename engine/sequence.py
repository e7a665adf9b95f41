"""A translation made of several requests on one route: a formatted text piece by piece (the
formatting kept verbatim between the pieces), or a document segment by segment.

One version translates every piece. A failure after the first piece is a failure of the whole
(`partial`), so the caller translates it all again on another version: the hot-swap promise,
applied to texts longer than one request.
"""
from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence

from . import translate
from .router import Route
from .translate import BackendFailed, Chunk, Limits, TranslationRequest, TranslationResult

OnText = Callable[[str], Awaitable[None]]
OnDone = Callable[[int, str], Awaitable[None]]


async def run(route: Route, items: Sequence[TranslationRequest | str], limits: Limits, *,
              on_text: OnText | None = None, on_done: OnDone | None = None) -> TranslationResult:
    """Translate each request in `items` on `route`, in order; a string is kept as it is.
    `on_text` hears every piece of text as it comes (kept strings too), `on_done` each request's
    whole translation by its index."""
    spec = route.backend.spec
    start = time.perf_counter()
    texts: list[str] = []
    results: list[TranslationResult] = []
    first_text_s = 0.0

    async def on_chunk(chunk: Chunk) -> None:
        nonlocal first_text_s
        if chunk.text:
            first_text_s = first_text_s or time.perf_counter() - start
            if on_text:
                await on_text(chunk.text)

    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append(item)
            if on_text and item:
                await on_text(item)
            continue
        try:
            result = await translate.stream(route, translate.for_translation(item)(spec), on_chunk, limits)
        except BackendFailed as exc:
            exc.partial = exc.partial or bool(results) or any(texts)  # earlier pieces were already given out
            raise
        results.append(result)
        texts.append(result.text)
        if on_done:
            await on_done(i, result.text)
    return TranslationResult(
        version=spec.name,
        role=route.role,
        text="".join(texts),
        ttft_ms=first_text_s * 1000,
        total_ms=(time.perf_counter() - start) * 1000,
        prompt_tokens=sum(r.prompt_tokens for r in results),
        completion_tokens=sum(r.completion_tokens for r in results),
        finish_reason=results[-1].finish_reason if results else "stop",
        served_by=results[0].served_by if results else spec.served_name,
        failover_note=route.failover_note,
    )
