"""Documents: read a file, translate its segments, get the same file back with its structure kept."""
from __future__ import annotations

import base64
import io
import re
import time
import zipfile

import docx
import pytest
import srt
from hypothesis import given, settings
from hypothesis import strategies as st

from engine import documents
from engine.errors import InvalidArgument

from . import docsamples, hostile

LIMITS = {"max_bytes": 1_000_000, "max_segments": 500}


def read(filename: str, data: bytes) -> documents.Document:
    return documents.read_document(filename, data, **LIMITS)


def translated(document: documents.Document) -> bytes:
    """The fake translator upper-cases every segment; the rebuilt file must keep its structure."""
    rebuilt = document.rebuild([segment.upper() for segment in document.segments])
    assert documents.structure_of(document.filename, rebuilt) == document.structure()
    return rebuilt


PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="  # 1x1 PNG


def rich_docx() -> bytes:
    document = docx.Document()
    document.sections[0].header.paragraphs[0].text = "Company report"
    document.add_heading("Annual summary", level=1)
    document.add_paragraph("The first paragraph is plain.")
    mixed = document.add_paragraph("This sentence has a ")
    mixed.add_run("bold").bold = True
    mixed.add_run(" word and {count} items.")
    document.add_paragraph().add_run("The third paragraph is bold.").bold = True
    pictured = document.add_paragraph("A picture follows")
    pictured.add_run().add_picture(io.BytesIO(base64.b64decode(PIXEL)))
    document.add_heading("Details", level=2)
    table = document.add_table(rows=2, cols=2)
    table.style = "Table Grid"
    for cell, text in zip((c for row in table.rows for c in row.cells), ("Name", "Value", "Color", "42"), strict=True):
        cell.text = text
    document.add_paragraph("")  # an empty paragraph stays empty and untouched
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def paragraphs(data: bytes) -> list[tuple[str, str]]:
    document = docx.Document(io.BytesIO(data))
    cells = [p for t in document.tables for row in t.rows for c in row.cells for p in c.paragraphs]
    return [(p.style.name if p.style else "", p.text) for p in document.paragraphs + cells]


def test_docx_keeps_paragraphs_styles_and_tables():
    data = rich_docx()
    document = read("report.docx", data)
    assert list(document.segments) == ["Annual summary", "The first paragraph is plain.", "This sentence has a bold word and",
                                       "items.", "The third paragraph is bold.", "A picture follows", "Details", "Name", "Value", "Color",
                                       "Company report"]
    assert document.structure() == {"paragraphs": 12, "tables": 1, "table cells": 4, "headings": 2, "images": 1}

    rebuilt = translated(document)
    before, after = paragraphs(data), paragraphs(rebuilt)
    assert [style for style, _ in after] == [style for style, _ in before]
    assert [text for _, text in after] == [text.upper().replace("{COUNT}", "{count}") for _, text in before]
    result = docx.Document(io.BytesIO(rebuilt))
    assert result.sections[0].header.paragraphs[0].text == "COMPANY REPORT"
    assert result.tables[0].style.name == "Table Grid"
    assert result.paragraphs[4].text == "A PICTURE FOLLOWS" and len(result.inline_shapes) == 1
    bold_paragraph = result.paragraphs[3]
    assert bold_paragraph.runs[0].bold and bold_paragraph.text == "THE THIRD PARAGRAPH IS BOLD."
    # The known loss: a paragraph's text goes into its first run, so an inner bold word is not bold any more.
    mixed = result.paragraphs[2]
    assert [(r.text, r.bold) for r in mixed.runs] == [("THIS SENTENCE HAS A BOLD WORD AND {count} ITEMS.", None)]


def test_docx_none_keeps_the_original_paragraph_and_its_runs():
    data = rich_docx()
    document = read("report.docx", data)
    keep_mixed = [None if s in ("This sentence has a bold word and", "items.") else s.upper() for s in document.segments]
    result = docx.Document(io.BytesIO(document.rebuild(keep_mixed)))
    mixed = result.paragraphs[2]
    assert [(r.text, bool(r.bold)) for r in mixed.runs] == [("This sentence has a ", False), ("bold", True),
                                                            (" word and {count} items.", False)]
    assert result.paragraphs[1].text == "THE FIRST PARAGRAPH IS PLAIN."
    assert paragraphs(document.rebuild([None] * len(document.segments))) == paragraphs(data)


SUBTITLES = (
    "1\r\n00:00:01,000 --> 00:00:02,500\r\nGood morning\r\n\r\n"
    "2\r\n00:00:03,000 --> 00:00:05,000\r\n<i>How are you?</i>\r\n- I'm fine, thank you\r\n\r\n"
    "7\r\n00:01:06,000 --> 00:01:07,250\r\nSee you at {time}\r\n\r\n"
)


def test_srt_keeps_indices_timings_and_lines():
    data = SUBTITLES.encode("utf-8")
    document = read("film.srt", data)
    assert list(document.segments) == ["Good morning", "How are you?", "I'm fine, thank you", "See you at"]
    assert document.structure() == {"cues": 3, "lines": 4}
    rebuilt = translated(document)
    assert document.rebuild([None] * 4) == data  # canonical SubRip, CRLF kept: the same bytes
    before, after = list(srt.parse(SUBTITLES)), list(srt.parse(rebuilt.decode("utf-8")))
    assert [(c.index, c.start, c.end) for c in after] == [(c.index, c.start, c.end) for c in before]
    assert [c.content for c in after] == ["GOOD MORNING", "<i>HOW ARE YOU?</i>\n- I'M FINE, THANK YOU",
                                          "SEE YOU AT {time}"]
    assert b"\r\n" in rebuilt


PAGE = """<!DOCTYPE html>
<html lang="en">
<head><title>Welcome page</title>
<style>body { font-family: sans-serif; } /* Not prose */</style>
<script>const greeting = "Do not translate this";</script>
</head>
<body class='main'>
  <!-- a comment stays as it is -->
  <h1 id="top">Hello &amp; welcome</h1>
  <p>Hello <b>dear <i>friend</i></b>, you have %d new&nbsp;messages.<br/>
     Read <a href="https://example.org/docs" title="Docs">the documentation</a> first.</p>
  <pre>keep   this   code</pre>
  <p>Call <code>baton --help</code> for more</p>
  <img src="a.png" alt="A picture"> <textarea>typed text</textarea>
</body>
</html>
"""


def test_html_translates_text_nodes_and_keeps_every_byte_of_markup():
    data = PAGE.encode("utf-8")
    document = read("page.html", data)
    assert list(document.segments) == ["Welcome page", "Hello", "welcome", "Hello", "dear", "friend", ", you have", "new",
                                       "messages.", "Read", "the documentation", "first.", "Call", "for more"]
    assert document.rebuild([None] * len(document.segments)) == data
    assert document.rebuild(list(document.segments)) == data
    rebuilt = translated(document).decode("utf-8")
    assert rebuilt == (PAGE.replace("Welcome page", "WELCOME PAGE").replace("Hello &amp; welcome", "HELLO &amp; WELCOME")
                       .replace("Hello <b>dear <i>friend</i></b>, you have %d new&nbsp;messages.",
                                "HELLO <b>DEAR <i>FRIEND</i></b>, YOU HAVE %d NEW&nbsp;MESSAGES.")
                       .replace("Read <a", "READ <a").replace("the documentation</a> first.", "THE DOCUMENTATION</a> FIRST.")
                       .replace("Call <code>", "CALL <code>").replace("</code> for more", "</code> FOR MORE"))


def test_html_translation_cannot_add_markup():
    document = read("page.htm", b"<p>Hello</p>")
    rebuilt = document.rebuild(["<b>Bonjour</b> & co"])
    assert rebuilt == b"<p>&lt;b&gt;Bonjour&lt;/b&gt; &amp; co</p>"
    assert documents.structure_of("page.htm", rebuilt) == document.structure() == {"tags": 1, "closing tags": 1,
                                                                                    "lines": 1}


MARKDOWN = """\
# Getting started

Install it with `pip install baton`, then read [the guide](https://example.org/guide).

```bash
echo "not prose"
```

- Hello {name}
- Visit https://example.org
"""


def test_md_keeps_code_links_and_layout():
    document = read("README.md", MARKDOWN.encode("utf-8"))
    assert list(document.segments) == ["Getting started", "Install it with", ", then read", "the guide", "Hello", "Visit"]
    assert document.structure() == {"lines": 11, "headings": 1, "code spans": 1, "links": 1, "code blocks": 1,
                                    "placeholders": 1, "URLs": 1}
    rebuilt = translated(document).decode("utf-8")
    assert rebuilt == (MARKDOWN.replace("Getting started", "GETTING STARTED").replace("Install it with", "INSTALL IT WITH")
                       .replace(", then read [the guide]", ", THEN READ [THE GUIDE]").replace("- Hello", "- HELLO")
                       .replace("- Visit", "- VISIT"))


def test_txt_keeps_blank_lines_line_endings_and_byte_order_mark():
    text = "\ufeffGood morning\r\n\r\n   Thank you very much   \r\n42\r\n"
    data = text.encode("utf-8")
    document = read("notes.txt", data)
    assert list(document.segments) == ["Good morning", "Thank you very much"]
    assert document.structure() == {"lines": 5}
    assert document.rebuild([None, None]) == data
    assert translated(document) == "\ufeffGOOD MORNING\r\n\r\n   THANK YOU VERY MUCH   \r\n42\r\n".encode()
    assert document.rebuild(["Bonjour", None]) == "\ufeffBonjour\r\n\r\n   Thank you very much   \r\n42\r\n".encode()
    with pytest.raises(ValueError, match="1 translations for 2 segments"):
        document.rebuild(["Bonjour"])


def test_samples_for_the_app_tests_are_phrasebook_sentences():
    french = docsamples.phrasebook("en", "fr")
    for filename, (data, segments) in (("s.docx", docsamples.sample_docx()), ("s.srt", docsamples.sample_srt())):
        document = read(filename, data)
        assert list(document.segments) == segments
        assert all(segment in french for segment in segments)
        rebuilt = document.rebuild([french[s] for s in segments])
        assert documents.structure_of(filename, rebuilt) == document.structure()
        assert french["Good morning"] in (rebuilt.decode() if filename.endswith(".srt") else
                                          docx.Document(io.BytesIO(rebuilt)).paragraphs[0].text)


def padded_docx(padding: int) -> bytes:
    """A valid .docx with an extra highly compressible part, as a zip bomb would have."""
    source = zipfile.ZipFile(io.BytesIO(docsamples.sample_docx()[0]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for name in source.namelist():
            target.writestr(name, source.read(name))
        target.writestr("word/padding.bin", b"\0" * padding)
    return out.getvalue()


def broken_docx_part() -> bytes:
    source = zipfile.ZipFile(io.BytesIO(docsamples.sample_docx()[0]))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as target:
        for name in source.namelist():
            target.writestr(name, b"<w:document" if name == "word/document.xml" else source.read(name))
    return out.getvalue()


@pytest.mark.parametrize(("filename", "data", "limits", "message"), [
    ("report.pdf", b"%PDF-1.7", {}, "Baton cannot translate 'report.pdf': it is a .pdf file. "
                                    "Send one of: .docx, .htm, .html, .md, .srt, .txt."),
    ("C:\\Users\\me\\sneaky\n.pdf", b"", {}, "Baton cannot translate 'sneaky.pdf': it is a .pdf file."),
    ("Makefile", b"all:", {}, "Baton cannot translate 'Makefile': it is a file without an extension."),
    ("../../etc/big.txt", b"x" * 2_500_000, {}, "'big.txt' is 2.5 MB, over the 1 MB limit for documents. "
                                                "Split it into smaller files"),
    ("huge.pdf", b"x" * 2_500_000, {}, "it is a .pdf file"),
    ("many.txt", "Hello\n".encode() * 600, {}, "'many.txt' has 600 pieces of text to translate, over the limit of 500."),
    ("notes.txt", "Grüße".encode("latin-1"), {}, "'notes.txt' could not be read as text: it is not UTF-8 (byte 3 is "
                                                 "not valid). Save it as UTF-8 text"),
    ("report.docx", b"not a zip at all", {}, "'report.docx' could not be read as a Word document: File is not a zip "
                                             "file. Check that it opens in Word or LibreOffice"),
    ("report.docx", None, {}, "'report.docx' could not be read as a Word document"),
    ("bomb.docx", "padded", {"max_bytes": 200_000}, "'bomb.docx' could not be read as a Word document: it unzips to"),
    ("film.srt", b"1\n00:00:01,000 --> nonsense\nHello\n", {}, "'film.srt' could not be read as SubRip subtitles"),
    ("film.srt", b"", {}, "'film.srt' has no text to translate. Send a file with some words in it."),
    # srt.parse scans a whole cue in one call that holds the GIL: a cue this long is refused first.
    ("film.srt", b"1\n00:00:01,000 --> 00:00:02,000\n" + b"a" * 20_000 + b"\n", {},
     "'film.srt' could not be read as SubRip subtitles: cue 1 is 20,033 characters long. A cue holds a few "
     "lines of at most 10,000 characters in all: check that a blank line ends each cue."),
    ("blank.txt", b"\n  \n42 - 17\n", {}, "'blank.txt' has no text to translate."),
    ("page.html", b"<script>var x = 'code only';</script><p> </p>", {}, "'page.html' has no text to translate."),
])
def test_refusals_say_what_is_wrong_and_what_to_do(filename, data, limits, message):
    data = broken_docx_part() if data is None else padded_docx(7_000_000) if data == "padded" else data
    with pytest.raises(InvalidArgument) as refused:
        documents.read_document(filename, data, **{**LIMITS, **limits})
    assert message in str(refused.value)
    assert refused.value.fix, "every refusal says what to do"


HTML_BITS = st.sampled_from(["<p>", "</p>", "<b>", "</b>", "<br/>", "<a href='x>y'>", "</a>", "<script>", "</script>",
                             "<pre>", "</pre>", "<!-- c -->", "<!DOCTYPE html>", "&amp;", "&nbsp;", "&#233;", "&", "<",
                             ">", "<b", "\n", "\r\n", " ", "Hello", "Good morning", "{name}", "%s", "é", "<?x?>",
                             "<![CDATA[x]]>", "<style>a{}</style>"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(HTML_BITS, st.text(max_size=5)), max_size=25).map("".join))
def test_html_markup_never_reaches_the_model_and_always_comes_back(page):
    document = documents.HtmlDocument("p.html", ".html", page.encode("utf-8"))
    assert document.rebuild([None] * len(document.segments)) == page.encode("utf-8")
    for segment in document.segments:
        assert not re.search(r"<[a-zA-Z/!?][^<>]*>|&#?\w+;", segment), segment
    rebuilt = document.rebuild([segment.upper() for segment in document.segments])
    assert documents.structure_of("p.html", rebuilt) == document.structure()


def test_a_docx_with_thousands_of_styles_is_read_in_moments():
    """Issue 20, item 4: python-docx's Paragraph.style searched all 4,000 styles for each of 1,000
    paragraphs (35 s of CPU on main, while logins waited); read from one table of styles now."""
    data = hostile.many_styles_docx(paragraphs=1_000, styles=4_000)
    started = time.process_time()
    document = documents.read_document("styles.docx", data, max_bytes=1_000_000, max_segments=2_000)
    assert time.process_time() - started < 5
    assert len(document.segments) == 1_000 and document.structure()["headings"] == 0


def test_docx_headings_are_counted_as_python_docx_names_their_styles():
    source = docx.Document()
    source.add_heading("Title", 0)
    source.add_heading("Chapter", 1)
    source.add_paragraph("Plain text")
    source.add_paragraph("Quoted", style="Quote")
    unknown = source.add_paragraph("Unknown style")
    unknown._p.get_or_add_pPr().style = "NoSuchStyle"  # falls back to the default style, as in Word
    character = source.add_paragraph("A character style's id")
    character._p.get_or_add_pPr().style = "Strong"  # not a paragraph style: the default again
    out = io.BytesIO()
    source.save(out)
    expected = sum(1 for p in docx.Document(io.BytesIO(out.getvalue())).paragraphs
                   if p.style is not None and (p.style.name or "").startswith(("Heading", "Title")))
    assert expected == 2 and read("headings.docx", out.getvalue()).structure()["headings"] == expected


def test_markup_left_unclosed_at_the_end_of_a_page_is_kept():
    """html.parser hands an unclosed `<!--` or `<!DOCTYPE` at the end over as text: it is not prose."""
    for page in ("<p>Hello</p><!--<!DOCTYPE html>", "<p>Hello</p><!DOCTYPE html", "<p>Hello</p><p class='x"):
        assert list(read("page.html", page.encode()).segments) == ["Hello"], page
    assert list(read("page.html", b"<p>a < b and c</p>").segments) == ["a < b and c"]  # a lone < is text
