"""A version's prompt templates, one per capability, and which one a request gets.

A recipe always has the plain template; it may add terminology, contextual and formatted ones
(HY-MT1.5's model card has all four), and the line format of one glossary term. The request's
needs pick the template: glossary terms that occur in the text, then earlier turns as context,
then formatting to keep. A version without the template a request needs gets the plain one,
and the answer says so: switching versions switches capabilities too.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from .terminology import Term


class Capability(StrEnum):
    PLAIN = "plain"
    TERMINOLOGY = "terminology"
    CONTEXTUAL = "contextual"
    FORMATTED = "formatted"
    TERM = "term"  # not a prompt: how one glossary term is written into {terms}


# The slots each template may use, and those it must use.
SLOTS: dict[Capability, frozenset[str]] = {
    Capability.PLAIN: frozenset({"source_lang", "target_lang", "text"}),
    Capability.TERMINOLOGY: frozenset({"source_lang", "target_lang", "text", "terms"}),
    Capability.CONTEXTUAL: frozenset({"source_lang", "target_lang", "text", "context"}),
    Capability.FORMATTED: frozenset({"source_lang", "target_lang", "text"}),
    Capability.TERM: frozenset({"source_term", "target_term"}),
}
REQUIRED: dict[Capability, frozenset[str]] = {
    Capability.PLAIN: frozenset({"text"}),
    Capability.TERMINOLOGY: frozenset({"text", "terms"}),
    Capability.CONTEXTUAL: frozenset({"text", "context"}),
    Capability.FORMATTED: frozenset({"text"}),
    Capability.TERM: frozenset({"source_term", "target_term"}),
}
DEFAULT_TERM = "{source_term} → {target_term}"
OPTIONAL = (Capability.TERMINOLOGY, Capability.CONTEXTUAL, Capability.FORMATTED, Capability.TERM)


@dataclass(frozen=True)
class Needs:
    """What one request asks of a prompt."""

    terms: Sequence[Term] = ()
    context: str = ""
    formatted: bool = False


@dataclass(frozen=True)
class Choice:
    capability: Capability
    template: str
    note: str  # why a needed template was not used; "" when nothing was missed


def choose(name: str, plain: str, extra: Mapping[str, str], needs: Needs) -> Choice:
    """The template for `needs` from version `name`'s set (`plain`, plus the `extra` capabilities)."""
    if needs.terms:
        if t := extra.get(Capability.TERMINOLOGY):
            return Choice(Capability.TERMINOLOGY, t, "")
        return Choice(Capability.PLAIN, plain,
                      f"{name} has no terminology template, so your glossary terms were not given to it")
    if needs.context and (t := extra.get(Capability.CONTEXTUAL)):
        return Choice(Capability.CONTEXTUAL, t, "")
    if needs.formatted and (t := extra.get(Capability.FORMATTED)):
        return Choice(Capability.FORMATTED, t, "")
    return Choice(Capability.PLAIN, plain, "")


def fill(choice: Choice, extra: Mapping[str, str], *, source_lang: str, target_lang: str, text: str,
         needs: Needs) -> str:
    term_line = extra.get(Capability.TERM, DEFAULT_TERM)
    terms = "\n".join(term_line.format(source_term=t.source, target_term=t.target) for t in needs.terms)
    return choice.template.format(source_lang=source_lang, target_lang=target_lang, text=text, terms=terms,
                                  context=needs.context)
