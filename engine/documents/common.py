"""What every document codec shares: prose segments through engine.formats, text decoding, and
the refusal for a file that cannot be read."""
from __future__ import annotations

from collections.abc import Sequence

from engine import formats
from engine.errors import InvalidArgument

BOM = "\ufeff"


class Segments:
    """The prose of several texts (lines, cues, text nodes, paragraphs) as one flat list of
    segments, and the texts rebuilt from translations of those segments."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._pieces = [formats.split(text) for text in texts]
        self.texts = list(texts)
        self.segments = [piece.text for pieces in self._pieces for piece in pieces if piece.translate]

    def rebuilt(self, translations: Sequence[str | None]) -> list[str]:
        """Each text with its segments replaced; a None translation keeps that segment."""
        if len(translations) != len(self.segments):
            raise ValueError(f"{len(translations)} translations for {len(self.segments)} segments")
        given = iter(translations)
        out = []
        for pieces in self._pieces:
            mapping = {}
            for i, piece in enumerate(pieces):
                if piece.translate and (translation := next(given)) is not None:
                    mapping[i] = translation
            out.append(formats.join(pieces, mapping))
        return out


def unreadable(filename: str, what: str, reason: str, fix: str) -> InvalidArgument:
    return InvalidArgument(f"'{filename}' could not be read as {what}: {reason}.", fix)


def decode(filename: str, data: bytes) -> tuple[str, str]:
    """The text of a UTF-8 file and its byte-order mark ("" if none), kept for the rebuilt file."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise unreadable(
            filename, "text", f"it is not UTF-8 (byte {exc.start + 1} is not valid)",
            "Save it as UTF-8 text (most editors offer this under 'Save as' / 'Encoding') and send it again.",
        ) from None
    if text.startswith(BOM):
        return text[1:], BOM
    return text, ""
