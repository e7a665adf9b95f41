"""The languages offered in the chat settings, and the checks on what a browser or client sends.

The code -> name table itself is the engine's (engine/languages.py): prompts name languages in
English ("French"), so the English name is what the engine gets.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine import InvalidArgument
from engine.languages import LANGUAGES, NAMES

AUTO = "auto"
AUTO_LABEL = "Auto-detect"

DEFAULT_SOURCE = AUTO
# The demo models learned English -> French/German/Spanish/Chinese/Japanese best, and the
# starters are English sentences, so French is the target that shows something on first use.
DEFAULT_TARGET = "fr"


@dataclass(frozen=True)
class Pair:
    source: str  # a code, or AUTO
    target: str  # a code

    @property
    def source_name(self) -> str:
        return AUTO if self.source == AUTO else NAMES[self.source]

    @property
    def target_name(self) -> str:
        return NAMES[self.target]

    def describe(self) -> str:
        src = AUTO_LABEL.lower() if self.source == AUTO else NAMES[self.source]
        return f"{src} → {NAMES[self.target]}"


def modes_chosen(modes: Mapping[str, object], current: Mapping[str, object]) -> dict[str, object]:
    """The chat settings' languages with what the composer's pickers sent ("source", "target")."""
    return {**current, **{f"{k}_lang": v for k, v in modes.items() if k in ("source", "target")}}


def check(code: object, what: str, fix: str) -> str:
    """A known language code (AUTO too, for a source), else a refusal that names it and says `fix`."""
    if not isinstance(code, str) or not (code in NAMES or (what == "source" and code == AUTO)):
        raise InvalidArgument(f"'{str(code)[:40]}' is not a {what} language Baton knows.", fix)
    return code


def resolve(settings: Mapping[str, object]) -> Pair:
    """The pair chosen in the chat settings; defaults when unset, an error when unknown.

    The values come from the browser, so they are checked rather than trusted.
    """
    fix = "Pick one from the list under From or To, below the message box."
    source = check(settings.get("source_lang") or DEFAULT_SOURCE, "source", fix)
    target = check(settings.get("target_lang") or DEFAULT_TARGET, "target", fix)
    if source == target:
        raise InvalidArgument(f"The source and target language are both {NAMES[source]}.",
                              "Pick a different language under To, below the message box.")
    return Pair(source, target)


__all__ = ["AUTO", "AUTO_LABEL", "DEFAULT_SOURCE", "DEFAULT_TARGET", "LANGUAGES", "NAMES", "Pair", "check",
           "modes_chosen", "resolve"]
