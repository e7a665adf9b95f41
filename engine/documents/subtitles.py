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

# A cue is a few lines. srt.parse runs one regular expression over the whole text, in one call
# that holds the GIL (and so the event loop) for as long as it scans: it is given one block
# between blank lines at a time, and a block longer than this is refused before any parsing.
MAX_CUE_CHARS = 10_000


def _blocks(text: str) -> list[str]:
    """The text's blocks between blank lines (each a cue, in a well-formed file). A blank line is
    empty or a lone \r, as for srt.parse, which ends a cue at the first one."""
    blocks: list[str] = []
    lines: list[str] = []
    for line in text.split("\n"):
        if line not in ("", "\r"):
            lines.append(line)
        elif lines:
            blocks.append("\n".join(lines) + "\n")
            lines = []
    if lines:
        blocks.append("\n".join(lines))
    return blocks


def _cues(filename: str, text: str) -> list[srt.Subtitle]:
    blocks = _blocks(text)
    for n, block in enumerate(blocks, 1):
        if len(block) > MAX_CUE_CHARS:
            raise unreadable(filename, "SubRip subtitles", f"cue {n} is {len(block):,} characters long",
                             f"A cue holds a few lines of at most {MAX_CUE_CHARS:,} characters in all: check that "
                             "a blank line ends each cue.")
    try:
        return [cue for block in blocks for cue in srt.parse(block)]
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
