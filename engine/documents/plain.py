""".txt and .md: every line's prose is translated; layout, blank lines, line endings and
markdown markup (fenced code, links, code spans, tags, placeholders) are kept byte for byte."""
from __future__ import annotations

from collections.abc import Sequence

from engine import formats
from engine.documents.common import Segments, decode

# The kinds of formats.structure a markdown file must keep, named as a user reads them.
_MARKDOWN = {"fence": "code blocks", "code": "code spans", "link": "links", "url": "URLs", "tag": "tags",
             "placeholder": "placeholders", "heading": "headings"}


def _structure(kind: str, text: str) -> dict[str, int]:
    counts = formats.structure(text)
    shown = {"lines": counts["line"]}
    if kind == ".md":
        for key, count in counts.items():
            name = _MARKDOWN.get(key.partition(":")[0])
            if name:
                shown[name] = shown.get(name, 0) + count
    return shown


class TextDocument:
    def __init__(self, filename: str, kind: str, data: bytes) -> None:
        self.filename = filename
        self.kind = kind
        text, self._bom = decode(filename, data)
        self._segments = Segments([text])
        self.segments: Sequence[str] = self._segments.segments

    def rebuild(self, translations: Sequence[str | None]) -> bytes:
        return (self._bom + self._segments.rebuilt(translations)[0]).encode("utf-8")

    def structure(self) -> dict[str, int]:
        return _structure(self.kind, self._segments.texts[0])
