"""A translation API's request, through the engine: the language codes its clients send, and its
texts translated by one version, a few at a time.

Shared by /v1/translate and the APIs of other translation services (LibreTranslate's, DeepL's),
so that all of them route, detect, keep formats and stay on one version the same way.
"""
from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from admin import languages
from engine import (
    MEMORY,
    BackendFailed,
    Engine,
    Health,
    InvalidArgument,
    NotReady,
    Term,
    TranslationRequest,
    TranslationResult,
)
from engine.languages import NAMES
from engine.translate import validate

from .errors import unavailable

_CODES = {code.lower(): code for code in NAMES}
# What clients send for a language Baton names otherwise: LibreTranslate's zt and pb, scripts and
# regions of Chinese, and retired ISO codes.
_ALIASES = {"zh-hans": "zh", "zh-cn": "zh", "zh-sg": "zh", "zt": "zh-Hant", "zh-tw": "zh-Hant", "zh-hk": "zh-Hant",
            "zh-mo": "zh-Hant", "pb": "pt", "fil": "tl", "iw": "he", "in": "id"}
MAX_CODE_CHARS = 35  # the longest tag BCP 47 asks implementations to accept
# Rounds of re-translating the texts a switch sent to another version, before giving up.
_ONE_VERSION_ROUNDS = 2


def language_code(code: str) -> str | None:
    """Baton's code for a client's: in any case, with `-` or `_`, and a region or script variant of a
    language Baton knows (en-GB, pt_BR, ZH-HANS, zh-Hant-TW) as that language; None if unknown."""
    parts = code.strip().lower().replace("_", "-").split("-") if len(code) <= MAX_CODE_CHARS else []
    for n in range(len(parts), 0, -1):  # the longest known prefix: zh-hant-tw -> zh-hant
        tag = "-".join(parts[:n])
        if (found := _CODES.get(tag) or _ALIASES.get(tag)) is not None:
            return found
    return None


def language_pair(source: str | None, target: str, fix: str) -> languages.Pair:
    """The pair a client asks for (a source of None, "" or "auto" is detected), or an InvalidArgument
    that names the code it did not know and says `fix`."""
    source = source or languages.AUTO
    return languages.Pair(languages.check(language_code(source) or source, "source", fix),
                          languages.check(language_code(target) or target, "target", fix))


def check_texts(texts: Sequence[str]) -> None:
    """Every text fit to translate (some words, not too long), before any is sent: a bad one found
    halfway would cancel the others' work."""
    for i, text in enumerate(texts, 1):
        try:
            validate(TranslationRequest(text, "-"))
        except InvalidArgument as exc:
            if len(texts) == 1:
                raise
            raise InvalidArgument(f"Text {i} of {len(texts)}: {exc.what}", exc.fix) from None


def serving(engine: Engine) -> Health:
    """The engine's health, or 503 at once when no version can answer."""
    health = engine.health()
    if not health.serving:
        raise unavailable(f"No version can answer right now. {health.detail}")
    return health


@dataclass(frozen=True)
class Batch:
    texts: Sequence[str]
    pair: languages.Pair
    conversation: str  # one for the whole request: its texts stay on one side of a canary split
    terms: tuple[Term, ...] = ()
    context: str = ""
    user: str = ""  # whose translation memory applies, beside the shared one
    use_memory: bool = True

    def request(self, i: int, version: str | None) -> TranslationRequest:
        return TranslationRequest(self.texts[i], self.pair.target_name, self.pair.source_name, self.conversation,
                                  version=version, terms=self.terms, context=self.context, user=self.user,
                                  use_memory=self.use_memory)


async def translate_texts(engine: Engine, batch: Batch, concurrency: int) -> list[TranslationResult]:
    """Every text of `batch`, `concurrency` at a time, all answered by one version. A switch while
    they are translated can send some to the new version: those are translated again by the
    version that answered most of them, or, when it is gone meanwhile, all of them again."""
    results = await _translate(engine, batch, range(len(batch.texts)), None, concurrency)
    for _ in range(_ONE_VERSION_ROUNDS):
        counts = Counter(r.version for r in results if r.version != MEMORY)  # memory answers belong to none
        if len(counts) <= 1:
            return results
        chosen = counts.most_common(1)[0][0]
        others = [i for i, r in enumerate(results) if r.version not in (chosen, MEMORY)]
        try:
            redone = await _translate(engine, batch, others, chosen, concurrency)
        except (NotReady, BackendFailed):  # the chosen version is gone: the routed one answers all
            results = await _translate(engine, batch, range(len(batch.texts)), None, concurrency)
            continue
        for i, result in zip(others, redone, strict=True):
            results[i] = result
        return results
    raise unavailable("The serving version changed several times while these texts were translated. "
                      "Send the request again.")


async def _translate(engine: Engine, batch: Batch, indices: Sequence[int], version: str | None,
                     concurrency: int) -> list[TranslationResult]:
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> TranslationResult:
        async with gate:
            return await engine.translate(batch.request(i, version), _ignore)

    # A TaskGroup owns the texts' tasks: one failing cancels the others, none is left running.
    try:
        async with asyncio.TaskGroup() as tg:
            tasks = [tg.create_task(one(i)) for i in indices]
    except ExceptionGroup as group:
        raise group.exceptions[0] from None  # the first failure says why
    return [t.result() for t in tasks]


async def _ignore(_: str) -> None:
    """These APIs answer whole: the tokens are not relayed."""


def answered_by(results: Sequence[TranslationResult]) -> dict[str, str]:
    """Response headers naming who answered a request's texts, for APIs whose bodies have no room
    for it: the version (X-Baton-Version, "memory" when translation memory answered them all), and
    which texts memory answered, with where each entry came from (X-Baton-Memory)."""
    headers = {"X-Baton-Version": next((r.version for r in results if r.version != MEMORY), MEMORY)}
    remembered = [f"text {i}: {r.memory}" for i, r in enumerate(results, 1) if r.memory]
    if remembered:
        headers["X-Baton-Memory"] = "; ".join(remembered)
    return headers
