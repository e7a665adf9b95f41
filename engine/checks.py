"""Checks on every model answer: what a translator should be warned of before trusting it.

- **wrong_language**: the answer does not read as the target language. Two tests, each sure of
  what it claims: the answer's writing system is not the target's (Chinese characters under
  "English → French" is never French, however short), or, in the target's own script, the
  detector (engine/detect.py) is at least WRONG_LANGUAGE_CONFIDENCE sure of another language in
  an answer of at least MIN_WORDS words (on single words it is not: "Non" reads as Italian).
- **untranslated**: the answer is the source text again, when the two languages differ.
- **length_ratio**: the answer is far shorter or longer than the source, after weighing each
  language's characters (a Chinese sentence takes about a third of the characters of an English one).
- **missing_terms** and **format_lost**: glossary terms the answer lacks, formatting it lost
  (found by engine/terminology.py and engine/formats.py, reported here with the others).

Every check runs in time linear in the texts' lengths (detection reads the first 200 characters).
"""
from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from . import detect
from .languages import NAMES
from .terminology import Term

Check = Literal["wrong_language", "untranslated", "length_ratio", "missing_terms", "format_lost"]
CHECKS: tuple[Check, ...] = ("wrong_language", "untranslated", "length_ratio", "missing_terms", "format_lost")

WRONG_LANGUAGE_CONFIDENCE = 0.9
MIN_WORDS = 3  # fewer words than this, and only the script can tell the language
# Characters an answer in each language takes for what English says in 1 (measured on the demo's
# phrasebook and golden set; languages not listed are taken as 1).
DENSITY = {"zh": 0.3, "zh-Hant": 0.3, "yue": 0.3, "ja": 0.4, "ko": 0.5}
LENGTH_RATIO_BOUNDS = (1 / 3.5, 3.5)  # weighed answer length over weighed source length
MIN_LENGTH_CHARS = 20  # the ratio of two short texts says little ("No" → "Non", "Yes" → "Oui")

# The writing systems each language is written in, as Unicode names a letter's script.
_LATIN = ("LATIN",)
SCRIPTS: dict[str, tuple[str, ...]] = {
    **{code: _LATIN for code in ("en", "fr", "pt", "es", "tr", "it", "de", "vi", "ms", "id", "tl", "pl", "cs", "nl")},
    **{code: ("CYRILLIC",) for code in ("ru", "uk", "kk", "mn")},
    **{code: ("ARABIC",) for code in ("ar", "fa", "ur", "ug")},
    **{code: ("CJK",) for code in ("zh", "zh-Hant", "yue")},
    "ja": ("CJK", "HIRAGANA", "KATAKANA"), "ko": ("HANGUL", "CJK"), "th": ("THAI",), "hi": ("DEVANAGARI",),
    "mr": ("DEVANAGARI",), "km": ("KHMER",), "my": ("MYANMAR",), "gu": ("GUJARATI",), "te": ("TELUGU",),
    "he": ("HEBREW",), "bn": ("BENGALI",), "ta": ("TAMIL",), "bo": ("TIBETAN",),
}
_SCRIPT_NAMES = {"CJK": "Chinese characters", "HANGUL": "Hangul", "HIRAGANA": "Japanese kana",
                 "KATAKANA": "Japanese kana"}


@dataclass(frozen=True)
class Flag:
    check: Check
    message: str  # what the translator is told, plain text


def script_of(text: str) -> str | None:
    """The script most of the text's letters are written in (as Unicode names it), or None without letters."""
    counts: Counter[str] = Counter()
    for ch in text:
        if ch.isalpha():
            counts[unicodedata.name(ch, "UNKNOWN").split(" ", 1)[0]] += 1
    return counts.most_common(1)[0][0] if counts else None


def _wrong_language(answer: str, target: str) -> Flag | None:
    scripts = SCRIPTS.get(target)
    if scripts is None:
        return None
    found = detect.detect(answer)
    named = f"{NAMES[found.code]}, {round(found.confidence * 100)} %" if found is not None else ""
    script = script_of(answer)
    if script is not None and script not in scripts:
        if found is None or script not in SCRIPTS.get(found.code, ()):
            named = f"written in {_SCRIPT_NAMES.get(script, script.title() + ' script')}"
        return Flag("wrong_language", f"This answer does not read as {NAMES[target]} (detected: {named}).")
    if (found is None or found.confidence < WRONG_LANGUAGE_CONFIDENCE or len(answer.split()) < MIN_WORDS
            or found.code.split("-")[0] == target.split("-")[0]):
        return None
    return Flag("wrong_language", f"This answer does not read as {NAMES[target]} (detected: {named}).")


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def _untranslated(source: str, answer: str, source_code: str, target: str) -> Flag | None:
    if source_code == target or len(source.split()) < 2 or _normalized(source) != _normalized(answer):
        return None  # one word may well be the same in both languages (a name, "Taxi")
    return Flag("untranslated", "This answer is the source text again, untranslated.")


def _length_ratio(source: str, answer: str, source_code: str, target: str) -> Flag | None:
    if len(source) < MIN_LENGTH_CHARS or not answer.strip():
        return None
    ratio = (len(answer) / DENSITY.get(target, 1.0)) / (len(source) / DENSITY.get(source_code, 1.0))
    low, high = LENGTH_RATIO_BOUNDS
    if low <= ratio <= high:
        return None
    how = "shorter" if ratio < low else "longer"
    return Flag("length_ratio", f"This answer is {len(answer)} characters for a source of {len(source)}: far {how} "
                                "than a translation usually is. Something may be missing or added.")


def check(source: str, answer: str, source_code: str, target: str, *, missing_terms: Sequence[Term] = (),
          format_lost: Sequence[str] = ()) -> tuple[Flag, ...]:
    """What is wrong with `answer` as a translation of `source` from `source_code` ("" when unknown)
    into `target` (codes of engine.languages). An empty answer is not judged."""
    flags: list[Flag | None] = []
    if answer.strip():
        flags += [_wrong_language(answer, target), _untranslated(source, answer, source_code, target),
                  _length_ratio(source, answer, source_code, target)]
    if missing_terms:
        flags.append(Flag("missing_terms", "Glossary terms missing: " + ", ".join(t.target for t in missing_terms)
                          + "."))
    if format_lost:
        flags.append(Flag("format_lost", "Formatting not kept: " + "; ".join(format_lost) + "."))
    return tuple(f for f in flags if f is not None)
