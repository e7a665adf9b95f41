"""Sample documents made of phrasebook sentences, so the demo models can really translate them.

Every sentence is in the phrasebook from English to each of fr, de, es, zh and ja. Each sample
returns (file bytes, the segments engine.documents should find, in order); look the expected
translations up with `phrasebook("en", "fr")`.
"""
from __future__ import annotations

import csv
import functools
import io
from pathlib import Path

import docx

PHRASEBOOK = Path(__file__).resolve().parent.parent / "demo" / "phrasebook.tsv"


@functools.cache
def phrasebook(src: str = "en", tgt: str = "fr") -> dict[str, str]:
    """Source sentence -> its translation, for one language pair of demo/phrasebook.tsv."""
    with PHRASEBOOK.open(encoding="utf-8", newline="") as f:
        return {row["src"]: row["tgt"] for row in csv.DictReader(f, delimiter="\t")
                if row["src_lang"] == src and row["tgt_lang"] == tgt}


def sample_docx() -> tuple[bytes, list[str]]:
    """A heading, three paragraphs (one in bold), and a 2x2 table."""
    document = docx.Document()
    document.add_heading("Good morning", level=1)
    document.add_paragraph("Thank you very much")
    document.add_paragraph().add_run("Where is the station?").bold = True
    document.add_paragraph("Nice to meet you")
    table = document.add_table(rows=2, cols=2)
    for cell, text in zip((c for row in table.rows for c in row.cells),
                          ("Hello", "Goodbye", "Good night", "Excuse me"), strict=True):
        cell.text = text
    out = io.BytesIO()
    document.save(out)
    segments = ["Good morning", "Thank you very much", "Where is the station?", "Nice to meet you",
                "Hello", "Goodbye", "Good night", "Excuse me"]
    return out.getvalue(), segments


def sample_srt() -> tuple[bytes, list[str]]:
    """Three cues; the second has two lines."""
    text = (
        "1\n00:00:01,000 --> 00:00:02,500\nGood morning\n\n"
        "2\n00:00:03,000 --> 00:00:05,000\nHow are you?\nI'm fine, thank you\n\n"
        "3\n00:00:06,000 --> 00:00:07,250\nExcuse me\n\n"
    )
    return text.encode("utf-8"), ["Good morning", "How are you?", "I'm fine, thank you", "Excuse me"]
