"""Formats kept: only prose reaches the model; code, links, tags and placeholders come back intact."""
from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from engine import formats

SOURCE = """\
# Getting started
Hello {name}, you have %s new <b>messages</b> &amp; {{count}} alerts.
Read [the guide](https://example.org/guide_(v2)) or visit www.example.com today.
Run `pip install baton` and set $BATON_HOME or ${BATON_PORT} first.
```python
print("do not translate me")
```
- **Bold** item with snake_case_name and %(total)d items
> A quoted line<br/>with a break
| Name | Value |
|------|-------|
| Color | Red |
~~~
fenced with tildes
~~~
"""


def fake_translate(pieces: list[formats.Piece]) -> dict[int, str]:
    """Stands in for the model: upper-cases every piece it is sent, and records what it saw."""
    return {i: p.text.upper() for i, p in enumerate(pieces) if p.translate}


def test_only_prose_is_sent_and_every_structure_comes_back():
    pieces = formats.split(SOURCE)
    sent = [p.text for p in pieces if p.translate]
    for protected in ("{name}", "%s", "<b>", "</b>", "&amp;", "{{count}}", "https://", "www.example.com",
                      "pip install", "$BATON_HOME", "${BATON_PORT}", "print(", "**", "%(total)d", "<br/>", "|",
                      "#", "fenced with tildes"):
        assert not any(protected in text for text in sent), protected
    assert "Getting started" in sent and "the guide" in sent and "messages" in sent and "A quoted line" in sent
    assert all(text == text.strip() and any(c.isalpha() for c in text) for text in sent)

    result = formats.join(pieces, fake_translate(pieces))
    assert formats.structure(result) == formats.structure(SOURCE)
    assert formats.lost(SOURCE, result) == []
    assert "# GETTING STARTED\n" in result
    assert "HELLO {name}, YOU HAVE %s NEW <b>MESSAGES</b> &amp; {{count}} ALERTS." in result
    assert "[THE GUIDE](https://example.org/guide_(v2)) OR VISIT www.example.com TODAY." in result
    assert '```python\nprint("do not translate me")\n```' in result
    assert "- **BOLD** ITEM WITH SNAKE_CASE_NAME AND %(total)d ITEMS" in result
    assert "| NAME | VALUE |\n|------|-------|\n| COLOR | RED |" in result
    assert "~~~\nfenced with tildes\n~~~" in result


def test_structure_counts_each_kind():
    counts = formats.structure(SOURCE)
    assert counts["fence"] == 2 and counts["code"] == 1 and counts["link"] == 1 and counts["url"] == 1
    assert counts["tag:<b>"] == 1 and counts["tag:</b>"] == 1 and counts["tag:<br/>"] == 1
    assert counts["placeholder:{name}"] == 1 and counts["placeholder:%s"] == 1
    assert counts["placeholder:{{count}}"] == 1 and counts["placeholder:$BATON_HOME"] == 1
    assert counts["heading:#"] == 1 and counts["bullet"] == 1 and counts["quote"] == 1
    assert counts["line"] == SOURCE.count("\n") + 1


def test_lost_names_what_a_whole_text_translation_dropped():
    source = "Hello {name}, see <b>this</b> [link](https://a.example) and [that](https://b.example)."
    dropped = "Bonjour, voir <b>ceci</b> et [cela](https://b.example)."
    assert formats.lost(source, dropped) == ["2 links in the text, 1 in the translation",
                                             "the placeholder {name} is missing"]
    assert formats.lost("a <b>b</b> %s", "a b %s") == ["the tag </b> is missing", "the tag <b> is missing"]
    assert formats.lost("one\ntwo", "un deux") == ["2 lines in the text, 1 in the translation"]
    assert formats.lost(source, source) == []


def test_plain_text_is_sent_whole():
    assert formats.is_plain("Good morning")
    assert formats.is_plain("  I'm fine, thank you!\n")
    assert formats.split("Good morning") == [formats.Piece("Good morning", True)]
    for marked in ("Hello {name}", "see https://example.org", "a `b`", "<b>hi</b>", "one\ntwo", "# Title", "%s left"):
        assert not formats.is_plain(marked), marked


def test_pieces_without_letters_are_kept_and_whitespace_moves_out():
    assert formats.split("  42 -- 17  ") == [formats.Piece("  42 -- 17  ", False)]
    assert formats.split("  Hi there \t") == [formats.Piece("  ", False), formats.Piece("Hi there", True),
                                              formats.Piece(" \t", False)]


def test_tabs_and_subtitle_overrides_are_kept():
    assert [p.text for p in formats.split("Name\tValue") if p.translate] == ["Name", "Value"]
    assert [p.text for p in formats.split("{\\an8}Good morning") if p.translate] == ["Good morning"]


def test_a_translation_cannot_add_lines():
    pieces = formats.split("- Hello\n- Goodbye")
    assert formats.join(pieces, {1: " Bonjour\n", 3: "Au\nrevoir"}) == "- Bonjour\n- Au revoir"
    assert formats.join(pieces, {}) == "- Hello\n- Goodbye"


MARKUP = st.sampled_from(["```", "~~~", "`", "**", "*", "_", "[", "](", ")", "http://", "www.", "<b>", "</", ">",
                          "&amp;", "&", "{", "}", "{{", "%", "%s", "$", "${", "#", "- ", "1. ", "> ", "|", "\n",
                          "\r\n", " ", "\t", "a", "Good morning", "é", "中"])
TEXTS = st.lists(st.one_of(MARKUP, st.text(max_size=8)), max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(TEXTS)
@example("```\ncode\n")
@example("`unclosed and [open](")
def test_split_then_join_gives_back_the_text_exactly(text):
    pieces = formats.split(text)
    assert formats.join(pieces, {i: p.text for i, p in enumerate(pieces) if p.translate}) == text
    assert formats.join(pieces, {}) == text
    for piece in pieces:
        if piece.translate:
            assert piece.text == piece.text.strip() and any(c.isalpha() for c in piece.text)
    assert formats.lost(text, text) == []
