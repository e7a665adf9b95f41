"""Document codecs: read a .txt, .md, .srt, .html/.htm or .docx file into short prose segments,
and rebuild the same file, structure kept, from their translations.

Pure and synchronous (bytes in, bytes out, nothing on disk): callers on the event loop run them
in asyncio.to_thread. Every refusal is an InvalidArgument that says what to do.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath
from typing import Protocol

from engine.documents.plain import TextDocument
from engine.documents.subtitles import SubtitleDocument
from engine.documents.webpage import HtmlDocument
from engine.documents.word import WordDocument
from engine.errors import InvalidArgument

KINDS = frozenset({".txt", ".md", ".srt", ".html", ".htm", ".docx"})
# A .docx may unzip to this many times its size before it is refused (text compresses ~10x).
_UNZIP_RATIO = 30


class Document(Protocol):
    filename: str
    kind: str
    segments: Sequence[str]  # the prose to translate, in order, each one trimmed

    def rebuild(self, translations: Sequence[str | None]) -> bytes:
        """The file with each segment replaced by its translation; None keeps the original."""
        ...

    def structure(self) -> dict[str, int]:
        """What the rebuilt file must keep, e.g. {"cues": 40, "lines": 61}."""
        ...


def _size(n: int) -> str:
    for unit, scale in (("MB", 1_000_000), ("KB", 1_000)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def _kind(filename: str) -> str:
    kind = PurePosixPath(filename.lower()).suffix
    if kind not in KINDS:
        what = f"a {kind} file" if kind else "a file without an extension"
        raise InvalidArgument(f"Baton cannot translate '{filename}': it is {what}.",
                              f"Send one of: {', '.join(sorted(KINDS))}.")
    return kind


def _parse(filename: str, data: bytes, max_unzipped: int | None = None) -> Document:
    kind = _kind(filename)
    if kind == ".srt":
        return SubtitleDocument(filename, data)
    if kind == ".docx":
        return WordDocument(filename, data, max_unzipped)
    if kind in (".html", ".htm"):
        return HtmlDocument(filename, kind, data)
    return TextDocument(filename, kind, data)


def shown_name(filename: str) -> str:
    """Only the last part of a name from the browser, printable, not too long: it is shown in the chat."""
    return "".join(c for c in PurePosixPath(filename.replace("\\", "/")).name if c.isprintable())[:120] or "the file"


def read_document(filename: str, data: bytes, *, max_bytes: int, max_segments: int) -> Document:
    """The document in `data`, or an InvalidArgument for an unknown type, a file over
    `max_bytes`, more than `max_segments` segments, an unreadable file, or no text at all."""
    name = shown_name(filename)
    split_it = "Split it into smaller files and send them one at a time."
    if len(data) > max_bytes:
        _kind(name)  # an unknown type is the first thing to say
        raise InvalidArgument(f"'{name}' is {_size(len(data))}, over the {_size(max_bytes)} limit for documents.",
                              split_it)
    document = _parse(name, data, max_bytes * _UNZIP_RATIO)
    if not document.segments:
        raise InvalidArgument(f"'{name}' has no text to translate.", "Send a file with some words in it.")
    if len(document.segments) > max_segments:
        raise InvalidArgument(f"'{name}' has {len(document.segments):,} pieces of text to translate, over the "
                              f"limit of {max_segments:,}.", split_it)
    return document


def structure_of(filename: str, data: bytes) -> dict[str, int]:
    """The structure of a (rebuilt) file, read back from its bytes."""
    return _parse(filename, data).structure()
