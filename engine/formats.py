"""Formats kept: protect markup and placeholders, translate only the prose between them.

`split` cuts a text into pieces: prose to send to the model, and everything else kept verbatim
(fenced code, inline code, URLs, link targets, HTML tags and entities, placeholders, markdown
line prefixes, table pipes, emphasis markers). `join` puts translations back in place, so
`join(split(t), {})` is `t` exactly. `structure`/`lost` count what must survive and say, in
plain words, what did not (for a model that was given the whole text, or that added markup).

A regex tokenizer rather than markdown-it-py: markdown-it keeps line ranges but not character
offsets for inline tokens, so it cannot give back the exact source between them, and it knows
nothing of placeholders or of HTML inside text nodes. Every token below is a span of the
source, so the round trip is exact by construction (a property test checks it).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    text: str
    translate: bool  # True: trimmed prose for the model; False: kept verbatim


# Every pattern below runs on user text, so each one is linear: quantifiers are possessive (no
# backtracking), and no token's body can hold the character its attempts start at, so an attempt
# never reads past the next place another attempt starts. Code spans and comments, whose bodies
# must hold anything, are found by _Closers with str.find instead. tests/test_formats_linear.py
# checks that 8 times the hostile text costs about 8 times the work, never 64.

# A fence opens with 3+ backticks or tildes (up to 3 spaces of indent) and closes with a line
# of at least as many of the same character; an unclosed fence runs to the end (CommonMark).
_FENCE_OPEN = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")

# Per line: nested quotes, then one heading / bullet / number marker.
_PREFIX = re.compile(
    r"[ \t]*+(?:>[ \t]?+)*+"
    r"(?:(?P<heading>#{1,6})(?:[ \t]++|$)|(?P<bullet>[-*+])[ \t]++|(?P<number>\d{1,9}[.)])[ \t]++)?+"
)

_URL_END = r"[^\s<>\"'`()\[\].,;:!?]"
_PAREN = r"\([^\s()]*+\)"  # balanced parentheses inside a URL, as in Wikipedia's
_URL_PART = rf"(?:{_PAREN}|{_URL_END})"
_TOKENS = re.compile(
    "|".join(
        (
            r"(?P<link_open>!?\[(?=[^\[\]]*+\]\())",
            # A ] in a link target may not open parentheses: "](" always starts a link of its own.
            r"(?P<link>\]\((?:[^()\s\]]++|\](?!\()|\([^()\s]*+\))*+(?:\s++\"[^\"]*+\")?+\))",
            # Trailing punctuation is not part of a URL: a run of it counts only when more URL follows.
            rf"(?P<url>(?:https?://|mailto:|www\.)(?:{_URL_PART}|[.,;:!?]++(?={_URL_PART}))++)",
            r"(?P<autolink><(?:https?://|mailto:)[^\s<>]*+>)",
            r"(?P<tag></?[A-Za-z][\w:.-]*+(?:\"[^\"<]*+\"|'[^'<]*+'|[^'\"<>]++)*+>)",
            r"(?P<entity>&(?:#\d++|#[xX][0-9a-fA-F]++|[A-Za-z][A-Za-z0-9]*+);)",
            # {{x}}, {name}/{0}/{0:.2f}, {\an8} (subtitle override), %s/%(name)d/%1$s, $VAR/${VAR}
            r"(?P<placeholder>\{\{[^{}]*+\}\}|\{[\w.\[\]]*+(?:![rsa])?+(?::[^{}]*+)?+\}|\{\\[^{}]*+\}"
            r"|%(?:\d++\$)?+(?:\([\w.-]++\))?+[-+#0]*+(?:\d++|\*)?+(?:\.(?:\d++|\*))?+[hlLqjzt]*+"
            r"[diouxXeEfFgGcrsa%]"
            r"|\$\{[^{}\s]++\}|\$[A-Za-z_]\w*+)",
            r"(?P<pipe>\|)",
            r"(?P<tab>\t++)",  # tabs separate columns: each side is translated on its own
            # Emphasis only at a word's edge, so snake_case and 2*3 stay as they are.
            r"(?P<emphasis>(?<![^\W_])(?:\*{1,3}|_{1,3}|~~)|(?:\*{1,3}|_{1,3}|~~)(?![^\W_]))",
        )
    )
)
# Where a token of _TOKENS can start. Searching for these first keeps each call into the regex
# engine short (it holds the GIL, so the event loop waits for it): one _TOKENS.search over a long
# stretch of prose tries every alternative at every character in one call.
_TOKEN_START = re.compile(r"[!\[\]<&{%$|\t*_~]|h(?=ttps?://)|m(?=ailto:)|w(?=ww\.)")
_TAG_NAME = re.compile(r"</?([A-Za-z][\w:.-]*+)")
_BACKTICKS = re.compile(r"`++")


@dataclass(frozen=True)
class _Span:
    text: str
    kind: str | None  # None: prose; otherwise what is kept (its `structure` key, or "" for layout)


class _Closers:
    """The code spans and HTML comments of one line, in linear time: a code span runs from a run
    of backticks to the next run of exactly as many (CommonMark), a comment from <!-- to the next
    -->. `at(pos)` is the first one starting at or after `pos`: (start, end, kind) or None."""

    def __init__(self, line: str) -> None:
        self._line = line
        runs = [(m.start(), m.end()) for m in _BACKTICKS.finditer(line)]
        closer: dict[int, int] = {}  # a run's length -> end of the nearest later run that long
        spans = []
        for start, end in reversed(runs):
            if (close := closer.get(end - start)) is not None:
                spans.append((start, close))
            closer[end - start] = end
        self._code = spans[::-1]
        self._next_code = 0
        self._comment: tuple[int, int] | None = None
        self._last_close = -1  # the last --> found: the closer of any <!-- up to 4 before it
        self._no_more_comments = False

    def at(self, pos: int) -> tuple[int, int, str] | None:
        while self._next_code < len(self._code) and self._code[self._next_code][0] < pos:
            self._next_code += 1
        code = self._code[self._next_code] if self._next_code < len(self._code) else None
        comment = self._comment_at(pos)
        if code and (comment is None or code[0] < comment[0]):
            return code[0], code[1], "code"
        return (comment[0], comment[1], "comment") if comment else None

    def _comment_at(self, pos: int) -> tuple[int, int] | None:
        if self._no_more_comments:
            return None
        if self._comment is None or self._comment[0] < pos:
            start = self._line.find("<!--", pos)
            if start >= 0 and self._last_close < start + 4:
                self._last_close = self._line.find("-->", start + 4)
            if start < 0 or self._last_close < 0:  # no later <!-- can close either
                self._no_more_comments = True
                return None
            self._comment = (start, self._last_close + 3)
        return self._comment


def _tokens(line: str, pos: int) -> Iterator[tuple[int, int, str]]:
    """(start, end, key) of each kept token of `line` from `pos`, leftmost first."""
    closers = _Closers(line)
    found = _first_token(line, pos)
    while True:
        if found is not None and found.start() < pos:  # a search's answer (None too) stays right until passed
            found = _first_token(line, pos)
        closed = closers.at(pos)
        if closed and (found is None or closed[0] < found.start()):
            start, pos, kind = closed
            yield start, pos, kind
        elif found:
            pos = found.end()
            yield found.start(), pos, _key(found)
        else:
            return


def _first_token(line: str, pos: int) -> re.Match[str] | None:
    """What _TOKENS.search(line, pos) finds, in short steps: a match tried only where one can start."""
    while (start := _TOKEN_START.search(line, pos)) is not None:
        if (match := _TOKENS.match(line, start.start())) is not None:
            return match
        pos = start.start() + 1
    return None


def _line_spans(line: str) -> Iterator[_Span]:
    prefix = _PREFIX.match(line)
    assert prefix is not None  # every group is optional
    if prefix.end():
        for kind in ("heading", "bullet", "number"):
            if prefix.group(kind):
                yield _Span(prefix.group(), kind + (":" + prefix.group(kind) if kind == "heading" else ""))
                break
        else:
            yield _Span(prefix.group(), "quote" if ">" in prefix.group() else "")
    start = prefix.end()
    for token_start, end, key in _tokens(line, start):
        if token_start > start:
            yield _Span(line[start:token_start], None)
        yield _Span(line[token_start:end], key)
        start = end
    if start < len(line):
        yield _Span(line[start:], None)


def _key(match: re.Match[str]) -> str:
    kind = match.lastgroup  # the alternative that matched (its outermost group closes last)
    assert kind is not None
    text = match.group()
    if kind == "tag":
        name = _TAG_NAME.match(text)
        assert name is not None
        closing = "/" if text.startswith("</") else ""
        selfclosing = "/" if text.endswith("/>") else ""
        return f"tag:<{closing}{name.group(1).lower()}{selfclosing}>"
    if kind in ("entity", "placeholder", "emphasis"):
        return f"{kind}:{text}"
    return {"link_open": "", "tab": "", "autolink": "url"}.get(kind, kind)


def _closes(line: str, fence: str) -> bool:
    """Whether `line` closes a fence opened with `fence` (```` ``` ```` or ~~~, or longer)."""
    body = line.lstrip(" ")
    rest = body.lstrip(fence[0])
    return len(line) - len(body) <= 3 and len(body) - len(rest) >= len(fence) and not rest.strip()


def _spans(text: str) -> Iterator[_Span]:
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        newline = _Span("\n", "") if i < len(lines) - 1 else None
        fence = _FENCE_OPEN.match(line)
        if fence:
            end = next((j for j in range(i + 1, len(lines)) if _closes(lines[j], fence.group(1))), len(lines) - 1)
            yield _Span("\n".join(lines[i : end + 1]), "fence")
            if end < len(lines) - 1:
                yield _Span("\n", "")
            i = end + 1
            continue
        yield from _line_spans(line)
        if newline:
            yield newline
        i += 1


def split(text: str) -> list[Piece]:
    """Prose pieces (trimmed, with at least one letter) to translate; everything else kept.

    Adjacent kept spans are merged, so pieces alternate between kept and translated.
    """
    pieces: list[Piece] = []
    kept: list[str] = []  # kept text since the last prose piece, joined once

    def flush() -> None:
        if joined := "".join(kept):
            pieces.append(Piece(joined, False))
        kept.clear()

    for span in _spans(text):
        if span.kind is not None or not any(c.isalpha() for c in span.text):
            kept.append(span.text)
            continue
        body = span.text.strip()
        lead = span.text[: len(span.text) - len(span.text.lstrip())]
        kept.append(lead)
        flush()
        pieces.append(Piece(body, True))
        kept.append(span.text[len(lead) + len(body) :])
    flush()
    return pieces


def join(pieces: Sequence[Piece], translations: Mapping[int, str]) -> str:
    """Kept pieces verbatim; each translate-piece replaced by `translations[index]` if given.

    A translation is one line of prose: its edges are trimmed and any line break inside it
    becomes a space, so a model's stray newline cannot add lines to the layout.
    """
    out = []
    for i, piece in enumerate(pieces):
        if piece.translate and i in translations:
            out.append(" ".join(translations[i].split()) if "\n" in translations[i] else translations[i].strip())
        else:
            out.append(piece.text)
    return "".join(out)


def structure(text: str) -> Counter[str]:
    """What must survive translation, counted per kind (e.g. "fence", "url", "tag:<b>",
    "placeholder:{name}", "heading:##", "line")."""
    counts = Counter(span.kind for span in _spans(text) if span.kind)
    counts["line"] = text.count("\n") + 1
    return counts


_NOUNS = {
    "fence": ("fenced code block", "fenced code blocks"),
    "code": ("inline code span", "inline code spans"),
    "link": ("link", "links"),
    "url": ("URL", "URLs"),
    "pipe": ("table pipe |", "table pipes |"),
    "bullet": ("list item", "list items"),
    "number": ("numbered item", "numbered items"),
    "quote": ("quoted line", "quoted lines"),
    "line": ("line", "lines"),
}


def _noun(key: str, count: int) -> str:
    family, _, detail = key.partition(":")
    if family in _NOUNS:
        return _NOUNS[family][count != 1]
    noun = {"tag": "tag", "entity": "entity", "placeholder": "placeholder", "emphasis": "emphasis marker"}.get(
        family, family
    )
    plural = {"entity": "entities"}.get(noun, noun + "s")
    return f"{noun if count == 1 else plural} {detail}".strip()


def lost(source: str, translated: str) -> list[str]:
    """One plain sentence per kind whose count differs between the text and its translation
    (missing or added); [] when the structure was kept."""
    before, after = structure(source), structure(translated)
    sentences = []
    for key in sorted(before.keys() | after.keys()):
        had, has = before[key], after[key]
        if had == has:
            continue
        if has == 0 and had == 1:
            sentences.append(f"the {_noun(key, 1)} is missing")
        else:
            sentences.append(f"{had} {_noun(key, had)} in the text, {has} in the translation")
    return sentences


def is_plain(text: str) -> bool:
    """One line of prose with nothing to protect: the chat can send it whole, as before."""
    return structure(text.strip()) == Counter(line=1)
