"""Several texts translated for one API request, whatever API it came through (/v1/translate,
DeepL's /v2/translate): one conversation for all of them, so they stay on one side of a canary
split, a bounded number at once, and no text's task left running when another fails."""
from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

from admin import languages
from engine import Engine, Term, TranslationRequest, TranslationResult


async def translate_texts(engine: Engine, texts: Sequence[str], pair: languages.Pair, *, terms: tuple[Term, ...] = (),
                          context: str = "", conversation: str | None = None,
                          concurrency: int = 4) -> list[TranslationResult]:
    """Each text's translation, in order; the first failure is raised (in the engine's terms)."""
    conv = conversation or f"translate-{uuid.uuid4()}"
    gate = asyncio.Semaphore(concurrency)

    async def one(text: str) -> TranslationResult:
        async with gate:
            return await engine.translate(
                TranslationRequest(text, pair.target_name, pair.source_name, conv, terms=terms, context=context),
                _ignore)

    # A TaskGroup owns the texts' tasks: one failing cancels the others, none is left running.
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(t)) for t in texts]
    except ExceptionGroup as group:
        raise group.exceptions[0] from None  # the first failure says why
    return [t.result() for t in tasks]


def versions_of(results: Sequence[TranslationResult]) -> str:
    """The versions that answered, for a response header: one name, unless a text failed over."""
    return ", ".join(dict.fromkeys(r.version for r in results))


async def _ignore(_: str) -> None:
    """The APIs answer whole: the tokens are not relayed."""
