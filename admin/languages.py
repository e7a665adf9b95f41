"""The languages HY-MT1.5 translates between, as offered in the chat settings.

The list is the model card's table (github.com/Tencent-Hunyuan/HY-MT, "Supported
languages"): 33 languages plus 5 ethnic-minority languages and dialects, 38 in all.
Prompts name languages in English ("French"), so the English name is what the engine gets.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from engine import InvalidArgument

AUTO = "auto"
AUTO_LABEL = "Auto-detect"

# (code, English name) in the model card's order.
LANGUAGES: tuple[tuple[str, str], ...] = (
    ("zh", "Chinese"), ("en", "English"), ("fr", "French"), ("pt", "Portuguese"), ("es", "Spanish"),
    ("ja", "Japanese"), ("tr", "Turkish"), ("ru", "Russian"), ("ar", "Arabic"), ("ko", "Korean"),
    ("th", "Thai"), ("it", "Italian"), ("de", "German"), ("vi", "Vietnamese"), ("ms", "Malay"),
    ("id", "Indonesian"), ("tl", "Filipino"), ("hi", "Hindi"), ("zh-Hant", "Traditional Chinese"),
    ("pl", "Polish"), ("cs", "Czech"), ("nl", "Dutch"), ("km", "Khmer"), ("my", "Burmese"),
    ("fa", "Persian"), ("gu", "Gujarati"), ("ur", "Urdu"), ("te", "Telugu"), ("mr", "Marathi"),
    ("he", "Hebrew"), ("bn", "Bengali"), ("ta", "Tamil"), ("uk", "Ukrainian"),
    # the 5 ethnic-minority languages and dialects
    ("bo", "Tibetan"), ("kk", "Kazakh"), ("mn", "Mongolian"), ("ug", "Uyghur"), ("yue", "Cantonese"),
)
NAMES: dict[str, str] = dict(LANGUAGES)

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


def source_items() -> dict[str, str]:
    """Label -> value, as Chainlit's Select widget wants them."""
    return {AUTO_LABEL: AUTO, **{name: code for code, name in LANGUAGES}}


def target_items() -> dict[str, str]:
    return {name: code for code, name in LANGUAGES}


def check(code: object, what: str, fix: str) -> str:
    """A known language code (AUTO too, for a source), else a refusal that names it and says `fix`."""
    if not isinstance(code, str) or not (code in NAMES or (what == "source" and code == AUTO)):
        raise InvalidArgument(f"'{str(code)[:40]}' is not a {what} language Baton knows.", fix)
    return code


def resolve(settings: Mapping[str, object]) -> Pair:
    """The pair chosen in the chat settings; defaults when unset, an error when unknown.

    The values come from the browser, so they are checked rather than trusted.
    """
    fix = "Pick one from the list in the chat settings."
    source = check(settings.get("source_lang") or DEFAULT_SOURCE, "source", fix)
    target = check(settings.get("target_lang") or DEFAULT_TARGET, "target", fix)
    if source == target:
        raise InvalidArgument(f"The source and target language are both {NAMES[source]}.",
                              "Pick a different target language in the chat settings.")
    return Pair(source, target)
