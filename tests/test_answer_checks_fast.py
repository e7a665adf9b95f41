"""The answer checks (engine/checks.py) on real sentences: the demo's phrasebook and golden set,
whose references are human translations. None of them may be flagged, and each one put under
another target language whose script differs must be."""
from __future__ import annotations

import csv
from pathlib import Path

import pytest

from engine import checks
from engine.terminology import Term

from .test_formats_linear import FLOOR_S, SLACK, SMALL, cpu_seconds

DEMO = Path(__file__).resolve().parent.parent / "demo"


def references() -> list[tuple[str, str, str, str]]:
    """(source language, target language, source, reference) of every row of the demo's sets."""
    rows = [(r["src_lang"], r["tgt_lang"], r["src"], r["tgt"])
            for r in csv.DictReader((DEMO / "phrasebook.tsv").open(encoding="utf-8"), delimiter="\t")]
    rows += [(r["src_lang"], r["tgt_lang"], r["source"], r["reference"])
             for r in csv.DictReader((DEMO / "golden.tsv").open(encoding="utf-8"), delimiter="\t")]
    assert len(rows) > 400
    return rows


def test_no_human_reference_translation_is_flagged():
    flagged = [(row, found) for row in references() if (found := checks.check(row[2], row[3], row[0], row[1]))]
    assert flagged == []


def test_every_reference_under_a_target_of_another_script_reads_as_the_wrong_language():
    missed = []
    for src, tgt, source, reference in references():
        for other in ("ru", "ko", "fr", "zh"):
            if checks.SCRIPTS[other] != checks.SCRIPTS[tgt] and not set(checks.SCRIPTS[other]) & set(
                    checks.SCRIPTS[tgt]):
                found = checks.check(source, reference, src, other)
                if not any(f.check == "wrong_language" for f in found):
                    missed.append((reference, other))
    assert missed == []


@pytest.mark.parametrize("source, answer, src, tgt, expected", [
    ("Good morning", "晚上好", "en", "fr", "does not read as French (detected: Chinese"),
    ("Where is the train station, please?", "Where is the train station, please?", "en", "de",
     "the source text again"),
    ("Where is the train station, please? I need to catch a train.", "Bahnhof.", "en", "de", "far shorter"),
    ("Thank you", "Danke " * 40, "en", "de", None),  # a source under 20 characters: no length judgement
    ("Taxi", "Taxi", "en", "de", None),  # one word may be the same in both languages
    ("Non", "Non", "fr", "en", None),
    ("I would like a coffee with milk, please.", "I would like a coffee with milk, please.", "en", "en", None),
])
def test_each_check_on_its_own_case(source, answer, src, tgt, expected):
    found = checks.check(source, answer, src, tgt)
    if expected is None:
        assert found == ()
    else:
        assert any(expected in f.message for f in found), found


def test_glossary_and_formatting_findings_are_reported_with_the_others():
    found = checks.check("Use the CLI", "Utilisez l'interface", "en", "fr", missing_terms=(Term("CLI", "CLI"),),
                         format_lost=("`code`",))
    assert [f.check for f in found] == ["missing_terms", "format_lost"]


def test_the_checks_take_time_linear_in_the_answer():
    """A hostile answer 8 times as long costs at most 3 x 8 times as much CPU (the measure of
    tests/test_formats_linear.py): the detector reads 200 characters, the rest is single passes."""
    def cost(size: int) -> float:
        return cpu_seconds(lambda: checks.check("a b " * size, "<a" + "b" * size, "en", "fr"))
    small, large = cost(SMALL), cost(8 * SMALL)
    assert large <= max(SLACK * 8 * small, FLOOR_S), (small, large)
