"""Evaluation sets: `NAME.tsv` directly under one of the allowed roots (BATON_EVAL_ROOTS), with
the header `src_lang, tgt_lang, source, reference` (tab-separated, language codes such as en, fr).

A set is read whole in a worker thread and checked row by row; a bad row is refused with its
line number. Its checksum is the SHA-256 of its bytes: an edited file is another set, and an
evaluation of the old file no longer counts for the gate.
"""
from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import BatonError, InvalidArgument, NotFound
from .languages import NAMES
from .settings import Settings
from .translate import MAX_TEXT_CHARS
from .validation import NAME_RE, check_name

HEADER = ("src_lang", "tgt_lang", "source", "reference")
MAX_BYTES = 5_000_000
MAX_ROWS = 5_000
MAX_LISTED = 200  # sets shown by a listing, per root


@dataclass(frozen=True)
class EvalRow:
    line: int  # in the file, for messages
    src_lang: str
    tgt_lang: str
    source: str
    reference: str


@dataclass(frozen=True)
class EvalSet:
    name: str
    path: Path
    checksum: str  # SHA-256 of the file's bytes, hex
    rows: tuple[EvalRow, ...]


@dataclass(frozen=True)
class EvalSetInfo:
    """A set as listed: its size and checksum, or why it cannot be used."""

    name: str
    path: str
    rows: int
    checksum: str
    problem: str = ""  # "" when the set can be used


def _roots(settings: Settings) -> str:
    return ", ".join(str(r) for r in settings.eval_roots)


def check_set_name(name: str) -> str:
    """A set's name: its file name without .tsv, so no path can hide in it."""
    return check_name(name, "evaluation set", "golden")


def locate(name: str, settings: Settings) -> Path:
    """The file of set `name`: NAME.tsv in the first root that has one, resolved (symlinks too)
    and still inside a root."""
    check_set_name(name)
    for root in settings.eval_roots:
        candidate = root / f"{name}.tsv"
        if not candidate.is_file():
            continue
        resolved = candidate.resolve()
        if not any(resolved.is_relative_to(r) for r in settings.eval_roots):
            raise InvalidArgument(f"The evaluation set '{name}' points outside the evaluation roots ({resolved}).",
                                  f"Put the file itself under {_roots(settings)} (BATON_EVAL_ROOTS).")
        return resolved
    raise NotFound(f"No evaluation set named '{name}'.",
                   f"Put {name}.tsv under {_roots(settings)} (BATON_EVAL_ROOTS); /eval lists the sets.")


def parse(name: str, path: Path, data: bytes) -> EvalSet:
    """Check every row of a set's bytes; the first bad one is refused with its line."""
    def bad(line: int, what: str) -> InvalidArgument:
        return InvalidArgument(f"Line {line} of the evaluation set '{name}' ({path}) {what}.",
                               "Fix that line and run /eval again.")

    if len(data) > MAX_BYTES:
        raise InvalidArgument(f"The evaluation set '{name}' is larger than {MAX_BYTES:,} bytes.",
                              f"Split it into sets of at most {MAX_ROWS:,} rows.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad(data[:exc.start].count(b"\n") + 1, "is not UTF-8 text") from None
    lines = text.split("\n")
    header = tuple(lines[0].rstrip("\r").split("\t"))
    if header != HEADER:
        raise bad(1, f"should be the header {' TAB '.join(HEADER)}, not {lines[0][:80]!r}")
    rows: list[EvalRow] = []
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != len(HEADER):
            raise bad(number, f"has {len(cells)} tab-separated fields; a row has 4 "
                              "(src_lang, tgt_lang, source, reference)")
        src, tgt, source, reference = (c.strip() for c in cells)
        for code in (src, tgt):
            if code not in NAMES:
                raise bad(number, f"names the language '{code[:20]}', which Baton does not know "
                                  "(use codes such as en, fr, de, es, zh, ja)")
        if src == tgt:
            raise bad(number, f"translates {NAMES[src]} into itself")
        if not source or not reference:
            raise bad(number, "has an empty " + ("source" if not source else "reference"))
        if len(source) > MAX_TEXT_CHARS:
            raise bad(number, f"has a source of {len(source)} characters; the limit is {MAX_TEXT_CHARS}")
        if len(rows) == MAX_ROWS:
            raise bad(number, f"is past the limit of {MAX_ROWS:,} rows per set")
        rows.append(EvalRow(number, src, tgt, source, reference))
    if not rows:
        raise InvalidArgument(f"The evaluation set '{name}' ({path}) has no rows.",
                              "Add rows below the header: src_lang, tgt_lang, source, reference.")
    return EvalSet(name, path, hashlib.sha256(data).hexdigest(), tuple(rows))


def read(name: str, settings: Settings) -> EvalSet:
    """Blocking: call it in a worker thread (`load`)."""
    path = locate(name, settings)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_BYTES + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise InvalidArgument(f"The evaluation set '{name}' cannot be read ({exc.strerror}).",
                              f"Check the file {path}.") from None
    return parse(name, path, data)


async def load(name: str, settings: Settings) -> EvalSet:
    return await asyncio.to_thread(read, name, settings)


def listing(settings: Settings) -> list[EvalSetInfo]:
    """Blocking: every set under the roots (the first root wins for a name found in two)."""
    found: dict[str, EvalSetInfo] = {}
    for root in settings.eval_roots:
        if not root.is_dir():
            continue
        names = sorted(p.stem for p in root.glob("*.tsv") if NAME_RE.fullmatch(p.stem))[:MAX_LISTED]
        for name in names:
            if name in found:
                continue
            try:
                s = read(name, settings)
                found[name] = EvalSetInfo(name, str(s.path), len(s.rows), s.checksum)
            except BatonError as exc:
                found[name] = EvalSetInfo(name, str(root / f"{name}.tsv"), 0, "", str(exc))
    return sorted(found.values(), key=lambda s: s.name)


async def available(settings: Settings) -> list[EvalSetInfo]:
    return await asyncio.to_thread(listing, settings)
