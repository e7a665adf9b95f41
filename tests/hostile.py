"""Hostile documents for the attack tests and benchmarks/hostile_bench.py: files within every
limit, built to make a parser work as hard as it can (patterns that backtrack on `<a` and many
letters, unclosed code spans and comments, thousands of styles in a small .docx)."""
from __future__ import annotations

import io
import random
import string
import zipfile

import docx

KINDS = (".txt", ".md", ".html", ".srt", ".docx")
# What made engine.formats' patterns backtrack on main: tags, links, code spans, comments and
# placeholders that open and never close.
_OPENERS = ("<a", "<b x='", "[", "](", "`", "``", "<!--", "{", "%0", "${", "http://a.(", "&a", "*", "_")


def hostile_line(size: int, opener: str = "<a") -> str:
    """`opener` and then letters, `size` characters: the tag pattern on main took time quadratic
    in the letters (24 KB froze the server for 11 s)."""
    return (opener + "a" * size)[:size]


def mixed_text(size: int) -> str:
    """Every opener in turn, each followed by a long run of letters, on a few long lines."""
    chunk = max(size // (4 * len(_OPENERS)), 1)
    lines = ["".join(hostile_line(chunk, opener) for opener in _OPENERS) for _ in range(4)]
    return "\n".join(lines)[:size]


def document(kind: str, size: int) -> bytes:
    """A hostile file of `kind`, about `size` bytes (at most)."""
    if kind == ".docx":  # as many paragraphs as the size allows (up to 1,000), each with filler
        paragraphs = min(size // 2_000, 1_000) or 1
        filler = min(size * 3 // (2 * paragraphs), 3_500)  # random letters zip to about 60%
        while len(data := many_styles_docx(paragraphs, 4_000, filler)) > size:
            filler = filler * 9 // 10
        return data
    text = mixed_text(size - 200)
    if kind == ".html":  # in a text node, where engine.formats scans it (a real < would open a tag)
        return f"<html><body><p>{text.replace('<', '&lt;')}</p></body></html>".encode()
    if kind == ".srt":
        return f"1\n00:00:01,000 --> 00:00:02,000\n{text}\n".encode()
    if kind == ".md":
        return f"# Notes\n{text}\n```\n".encode()  # and a fence that never closes
    return text.encode()


def many_styles_docx(paragraphs: int, styles: int, filler: int = 0) -> bytes:
    """A small .docx whose paragraphs name no style, with thousands of styles to search for the
    default one (python-docx's Paragraph.style looks through them all, per paragraph). The styles
    are written into styles.xml directly: python-docx's add_style searches them all too. Each
    paragraph may end with `filler` random letters (which do not compress), to make the file big."""
    letters = random.Random(0)
    document = docx.Document()
    for n in range(paragraphs):
        noise = "".join(letters.choices(string.ascii_lowercase, k=filler))
        document.add_paragraph(f"Paragraph {n}: good morning {noise}".rstrip())
    out = io.BytesIO()
    document.save(out)
    extra = "".join(f'<w:style w:type="paragraph" w:customStyle="1" w:styleId="Hostile{n}">'
                    f'<w:name w:val="Hostile {n}"/></w:style>' for n in range(styles))
    packed = io.BytesIO()
    with zipfile.ZipFile(out) as source, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "word/styles.xml":
                data = data.replace(b"</w:styles>", extra.encode() + b"</w:styles>")
            target.writestr(item, data)
    return packed.getvalue()
