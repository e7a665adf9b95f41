"""Glossary terms: which ones a text needs, and which of them an answer is missing.

Matching is case-insensitive on whole words where the language has spaces between words; in
Chinese, Japanese and Thai text a term matches anywhere, since words are not spaced there.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Term:
    source: str
    target: str
    lang: str | None = None  # the target language's code it applies to; None: every target


_UNSPACED = re.compile(r"[\u0E00-\u0E7F\u3040-\u30FF\u3400-\u9FFF\uF900-\uFAFF]")


def occurs(term: str, text: str) -> bool:
    if _UNSPACED.search(term):
        return term.casefold() in text.casefold()
    return re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, re.IGNORECASE) is not None


def relevant(terms: Iterable[Term], text: str, target_code: str) -> tuple[Term, ...]:
    """The terms for this target that occur in `text`; the longest wins where two share a source
    ("machine translation" over "translation"), and a term for the target beats one for every target."""
    found: dict[str, Term] = {}
    for t in sorted(terms, key=lambda t: t.lang is None):  # specific first: setdefault keeps it
        if t.lang in (None, target_code) and occurs(t.source, text):
            found.setdefault(t.source.casefold(), t)
    chosen = sorted(found.values(), key=lambda t: -len(t.source))
    kept: list[Term] = []
    for t in chosen:
        if not any(occurs(t.source, k.source) for k in kept):
            kept.append(t)
    return tuple(kept)


def missing(answer: str, terms: Sequence[Term]) -> tuple[Term, ...]:
    """The expected target terms that the answer does not contain."""
    return tuple(t for t in terms if not occurs(t.target, answer))
