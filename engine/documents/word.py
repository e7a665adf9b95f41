""".docx through python-docx: body paragraphs, table cells (nested tables too), headers and
footers. Each paragraph's prose is translated (placeholders and URLs kept by engine.formats).

Known loss: a translated paragraph's text goes into its first run with text, which keeps that
run's character style, and the paragraph's other runs are emptied, so mixed inline formatting
inside one paragraph (a bold word in a plain sentence) is lost; the paragraph's own style,
images, page breaks, tables and section layout are kept. Not reached: text boxes, footnotes,
comments, tracked insertions.
"""
from __future__ import annotations

import io
import zipfile
from collections.abc import Callable, Iterator, Sequence

import docx
from docx.blkcntnr import BlockItemContainer
from docx.document import Document as DocxDocument
from docx.enum.style import WD_STYLE_TYPE
from docx.opc.exceptions import PackageNotFoundError
from docx.oxml.ns import qn
from docx.styles import BabelFish
from docx.table import Table
from docx.text.hyperlink import Hyperlink
from docx.text.paragraph import Paragraph
from docx.text.run import Run

from engine.documents.common import Segments, unreadable

_TEXT = frozenset({qn("w:t"), qn("w:tab"), qn("w:cr"), qn("w:noBreakHyphen"), qn("w:ptab")})
_LINE_BREAK = qn("w:br")
_BREAK_TYPE = qn("w:type")
_RUN_PROPERTIES = qn("w:rPr")


def _open(filename: str, data: bytes, max_unzipped: int | None) -> DocxDocument:
    try:
        if max_unzipped is not None:
            # A small .docx can unzip to gigabytes: refuse before python-docx reads it all.
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                unzipped = sum(info.file_size for info in archive.infolist())
            if unzipped > max_unzipped:
                raise unreadable(filename, "a Word document", f"it unzips to {unzipped:,} bytes",
                                 "Send a smaller document.")
        return docx.Document(io.BytesIO(data))
    except (zipfile.BadZipFile, PackageNotFoundError, KeyError, ValueError, SyntaxError) as exc:
        # SyntaxError covers lxml's XMLSyntaxError (a damaged part inside the zip).
        raise unreadable(
            filename, "a Word document", str(exc) or type(exc).__name__,
            "Check that it opens in Word or LibreOffice, save it again as .docx and send it again.",
        ) from None


def _style_names(document: DocxDocument) -> Callable[[Paragraph], str]:
    """Each paragraph's style name, from a table of the styles read once. python-docx's
    Paragraph.style searches every style in Python for each paragraph (and again for the default
    style when a paragraph names none): 1,000 paragraphs over 4,000 styles cost 35 s of CPU."""
    by_id: dict[str, tuple[object, str]] = {}
    default = ""
    for style in document.styles.element.style_lst:
        shown = BabelFish.internal2ui(style.name_val or "")
        by_id.setdefault(style.styleId or "", (style.type, shown))  # the first of an id wins, as in python-docx
        if style.type == WD_STYLE_TYPE.PARAGRAPH and style.default:
            default = shown  # the last default wins, as the standard says

    def style_name(paragraph: Paragraph) -> str:
        kind, found = by_id.get(paragraph._p.style or "", (None, ""))
        return found if kind == WD_STYLE_TYPE.PARAGRAPH else default

    return style_name


class _Parts:
    """Every paragraph and table of a document, in a stable order (body, then headers/footers)."""

    def __init__(self, document: DocxDocument) -> None:
        self.paragraphs: list[Paragraph] = []
        self.tables: list[Table] = []
        self.cells = 0
        self._walk(document)
        for section in document.sections:
            for part in (section.header, section.first_page_header, section.even_page_header,
                         section.footer, section.first_page_footer, section.even_page_footer):
                if not part.is_linked_to_previous:  # a linked one has no content of its own
                    self._walk(part)

    def _walk(self, container: BlockItemContainer | DocxDocument) -> None:
        for block in container.iter_inner_content():
            if isinstance(block, Paragraph):
                self.paragraphs.append(block)
                continue
            self.tables.append(block)
            seen = set()
            for row in block.rows:
                for cell in row.cells:  # a merged cell is listed once per grid column it spans
                    if cell._tc not in seen:
                        seen.add(cell._tc)
                        self.cells += 1
                        self._walk(cell)


def _runs(paragraph: Paragraph) -> Iterator[Run]:
    """The runs whose text makes paragraph.text, in order (hyperlinks' runs included)."""
    for item in paragraph.iter_inner_content():
        if isinstance(item, Hyperlink):
            yield from item.runs
        else:
            yield item


def _write(paragraph: Paragraph, text: str) -> None:
    runs = [run for run in _runs(paragraph) if run.text]
    for run in runs:
        for child in list(run._r):
            if child.tag in _TEXT or (child.tag == _LINE_BREAK and child.get(_BREAK_TYPE) in (None, "textWrapping")):
                run._r.remove(child)
    first = runs[0]
    for run in runs[1:]:
        if all(child.tag == _RUN_PROPERTIES for child in run._r):  # nothing left but its formatting
            run._r.getparent().remove(run._r)
    for n, line in enumerate(text.split("\n")):
        if n:
            first.add_break()
        for m, part in enumerate(line.split("\t")):
            if m:
                first.add_tab()
            if part:
                first.add_text(part)


class WordDocument:
    kind = ".docx"

    def __init__(self, filename: str, data: bytes, max_unzipped: int | None = None) -> None:
        self.filename = filename
        self._data = data
        document = _open(filename, data, max_unzipped)
        parts, style = _Parts(document), _style_names(document)
        self._segments = Segments([paragraph.text for paragraph in parts.paragraphs])
        self.segments: Sequence[str] = self._segments.segments
        self._structure = {
            "paragraphs": len(parts.paragraphs),
            "tables": len(parts.tables),
            "table cells": parts.cells,
            "headings": sum(1 for p in parts.paragraphs if style(p).startswith(("Heading", "Title"))),
            "images": sum(len(p._p.xpath(".//w:drawing")) for p in parts.paragraphs),
        }

    def rebuild(self, translations: Sequence[str | None]) -> bytes:
        # Re-read the original each time, so a rebuild never sees an earlier one's changes.
        document = docx.Document(io.BytesIO(self._data))
        paragraphs = _Parts(document).paragraphs
        for paragraph, old, new in zip(paragraphs, self._segments.texts, self._segments.rebuilt(translations),
                                       strict=True):
            if new != old:  # an untouched paragraph keeps all its runs and their formatting
                _write(paragraph, new)
        out = io.BytesIO()
        document.save(out)
        return out.getvalue()

    def structure(self) -> dict[str, int]:
        return dict(self._structure)
