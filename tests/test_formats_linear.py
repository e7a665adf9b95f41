"""Hostile text costs linear time: engine.formats scans every chat message, /v1/translate text and
document line, so a text built to make a pattern backtrack (`<a` then many letters, unclosed code
spans, brackets, placeholders, fences...) must cost 8 times as much when it is 8 times as long,
never 64 times (a quadratic scan froze the server for 11 s on a 24 KB upload).

Measured in process CPU time, the best of three runs each, with a slack of 3x over linear and a
floor, so a busy machine cannot make it flaky: a quadratic scan misses the bound by far.
"""
from __future__ import annotations

import time
from collections.abc import Callable

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from engine import formats

# Pieces that start (or nearly start) a kept token, and prose that might extend one.
UNITS = ["<a", "</a", "<a '", '"', "'", "a", " ", "[", "](", "](a(b)", "]", "(", ")", "`", "``", "```\n", "~~~\n",
         "<!--", "-->", "{", "{{", "{\\", "}", "%", "%0", "%(", "%1$", "$", "${", "*", "_", "~~", "http://",
         "www.", "mailto:", ".", "&", "&#", "&a", "|", "\t", "# ", "> ", "- ", "1. ", "\n", "é"]
HOSTILE = st.lists(st.sampled_from(UNITS), min_size=1, max_size=4).map("".join)
SMALL = 1_500  # characters; the large text is 8 times as long
SLACK = 3  # a linear scan may cost up to 3 x 8 times as much on 8 times the text (noise, caches)
FLOOR_S = 0.03  # below this, a difference is noise


def repeated(unit: str, size: int) -> str:
    return (unit * (size // len(unit) + 1))[:size]


def cpu_seconds(work: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def scan(text: str) -> None:
    formats.join(formats.split(text), {})
    formats.structure(text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE, st.sampled_from(["", "a", ">", "`", "\n"]))
@example("<a", "")  # the attack that reproduced: an HTML tag that never closes
@example("``x", "")  # code spans: a search for other tokens must not restart after each one
@example("<a'\"", "")  # quotes that would let one tag attempt read past the next <
@example("%0", "")  # printf flags and width overlap
@example("http://a.", "(")
@example("```\n", "")  # fences
def test_eight_times_the_hostile_text_costs_about_eight_times_the_work(unit, tail):
    small, large = repeated(unit, SMALL) + tail, repeated(unit, 8 * SMALL) + tail
    small_s, large_s = cpu_seconds(lambda: scan(small)), cpu_seconds(lambda: scan(large))
    assert large_s <= SLACK * 8 * small_s + FLOOR_S, (
        f"{unit!r}: {SMALL:,} characters took {small_s * 1000:.1f} ms, {8 * SMALL:,} took {large_s * 1000:.1f} ms")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(UNITS), max_size=40).map("".join))
def test_hostile_text_still_splits_and_joins_back_exactly(text):
    pieces = formats.split(text)
    assert formats.join(pieces, {}) == text
    assert all(p.text == p.text.strip() and any(c.isalpha() for c in p.text) for p in pieces if p.translate)
