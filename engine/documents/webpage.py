""".html/.htm through the standard library's html.parser: the text between tags is translated,
outside script, style, code, pre, textarea and template; everything else is kept byte for byte.

html.parser (rather than BeautifulSoup or lxml) because it reports where each tag and text run
starts, so the page is rewritten in place: tags, attributes, comments, entities, whitespace and
even broken markup come back exactly as sent, and only translated text changes. A tree parser
re-serialises the page instead (entities decoded, attributes re-quoted, tags closed).
Attributes are not translated (alt, title, placeholder), nor is <html lang> changed.
"""
from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Sequence
from html.parser import HTMLParser

from engine.documents.common import Segments, decode

_UNCLOSED_MARKUP = re.compile(r"<[!?/A-Za-z]")
_UNTRANSLATED = frozenset({"script", "style", "code", "pre", "textarea", "template"})


class _Scanner(HTMLParser):
    """Records where each parser event starts, whether it is translatable text, and counts tags."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)  # entities arrive as their own events, kept raw
        self._line_starts = [0] + [match.end() for match in re.finditer("\n", text)]
        self._inside: Counter[str] = Counter()
        self.events: list[tuple[int, bool]] = []  # (offset, translatable text)
        self.tags = 0
        self.closing_tags = 0
        self._source = text
        self._unclosed = False  # past a `<` that starts markup never closed: the rest is no prose
        self.feed(text)
        self.close()

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._line_starts[line - 1] + column

    def _mark(self, translatable: bool) -> None:
        self.events.append((self._offset(), translatable and not any(self._inside.values())))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._mark(False)
        self.tags += 1
        if tag in _UNTRANSLATED:
            self._inside[tag] += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._mark(False)
        self.tags += 1

    def handle_endtag(self, tag: str) -> None:
        self._mark(False)
        self.closing_tags += 1
        if self._inside[tag]:
            self._inside[tag] -= 1

    def handle_data(self, data: str) -> None:
        # Markup left unclosed at the end (`<!--…`, `<!DOCTYPE…`, `<p class='x…`) arrives as text,
        # from its `<` to the end of the page: kept, not translated. A lone `<` (a < b) is text.
        self._unclosed = self._unclosed or bool(_UNCLOSED_MARKUP.match(self._source, self._offset()))
        self._mark(not self._unclosed)

    def handle_entityref(self, name: str) -> None:
        self._mark(True)

    def handle_charref(self, name: str) -> None:
        self._mark(True)

    def handle_comment(self, data: str) -> None:
        self._mark(False)

    def handle_decl(self, decl: str) -> None:
        self._mark(False)

    def handle_pi(self, data: str) -> None:
        self._mark(False)

    def unknown_decl(self, data: str) -> None:
        self._mark(False)


def _runs(text: str, scanner: _Scanner) -> list[tuple[int, int]]:
    """The (start, end) of each stretch of translatable text, entities included."""
    runs: list[tuple[int, int]] = []
    for n, (start, translatable) in enumerate(scanner.events):
        end = scanner.events[n + 1][0] if n + 1 < len(scanner.events) else len(text)
        if not translatable or start == end:
            continue
        if runs and runs[-1][1] == start:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))
    return runs


class HtmlDocument:
    def __init__(self, filename: str, kind: str, data: bytes) -> None:
        self.filename = filename
        self.kind = kind
        self._text, self._bom = decode(filename, data)
        self._scanner = _Scanner(self._text)
        self._runs = _runs(self._text, self._scanner)
        self._segments = Segments([self._text[start:end] for start, end in self._runs])
        self.segments: Sequence[str] = self._segments.segments

    def rebuild(self, translations: Sequence[str | None]) -> bytes:
        # A translation is text, not markup: escaping it means it can never add a tag.
        escaped = [None if t is None else html.escape(t, quote=False) for t in translations]
        out, done = [], 0
        for (start, end), text in zip(self._runs, self._segments.rebuilt(escaped), strict=True):
            out += [self._text[done:start], text]
            done = end
        out.append(self._text[done:])
        return (self._bom + "".join(out)).encode("utf-8")

    def structure(self) -> dict[str, int]:
        return {"tags": self._scanner.tags, "closing tags": self._scanner.closing_tags,
                "lines": self._text.count("\n") + 1}
