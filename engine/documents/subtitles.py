""".srt through the `srt` package: every cue keeps its index and timings, every text line of a
cue stays a line (its prose is a segment; tags such as <i> are kept by engine.formats).

The file is written back by srt.compose, so it comes out in canonical SubRip form: timestamps
as HH:MM:SS,mmm, one blank line between cues, blank lines inside a cue dropped; the line ending
(LF or CRLF) and a byte-order mark are kept.
"""
from __future__ import annotations

from collections.abc import Sequence

import srt

from engine.documents.common import Segments, decode, unreadable


def _cues(filename: str, text: str) -> list[srt.Subtitle]:
    try:
        return list(srt.parse(text))
    except (srt.SRTParseError, ValueError) as exc:
        raise unreadable(
            filename, "SubRip subtitles", str(exc),
            "Check that each cue is an index line, a 'HH:MM:SS,mmm --> HH:MM:SS,mmm' line and its text, "
            "with a blank line between cues.",
        ) from None


class SubtitleDocument:
    kind = ".srt"

    def __init__(self, filename: str, data: bytes) -> None:
        self.filename = filename
        text, self._bom = decode(filename, data)
        self._eol = "\r\n" if "\r\n" in text else "\n"
        self._cues = _cues(filename, text)
        self._segments = Segments([cue.content for cue in self._cues])
        self.segments: Sequence[str] = self._segments.segments

    def rebuild(self, translations: Sequence[str | None]) -> bytes:
        cues = [
            srt.Subtitle(cue.index, cue.start, cue.end, content, cue.proprietary)
            for cue, content in zip(self._cues, self._segments.rebuilt(translations), strict=True)
        ]
        composed: str = srt.compose(cues, reindex=False, eol=self._eol)
        return (self._bom + composed).encode("utf-8")

    def structure(self) -> dict[str, int]:
        lines = sum(1 for cue in self._cues for line in cue.content.split("\n") if line.strip())
        return {"cues": len(self._cues), "lines": lines}
