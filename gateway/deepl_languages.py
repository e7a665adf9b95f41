"""DeepL's language codes and Baton's: "EN-GB", "PT-BR", "ZH-HANT" in, "en", "pt", "zh-Hant" out.

DeepL writes codes in capitals and names some targets by variant. Baton's versions translate
into a language, not a variant: EN-GB and EN-US both become English, PT-BR and PT-PT Portuguese
(the variant is accepted and not told apart). ZH-HANT is Baton's Traditional Chinese. Every
other Baton language keeps its own code, in capitals (Baton offers some DeepL does not, such as
Cantonese, YUE).
"""
from __future__ import annotations

from engine import InvalidArgument
from engine.languages import LANGUAGES, NAMES

# DeepL's target variants -> Baton's code.
VARIANTS = {"EN-GB": "en", "EN-US": "en", "PT-BR": "pt", "PT-PT": "pt", "ZH-HANS": "zh", "ZH-HANT": "zh-Hant",
            "ES-419": "es"}
# Baton's code -> the targets DeepL's clients expect for it (the others: the code in capitals).
_TARGETS = {"en": ("EN-GB", "EN-US"), "pt": ("PT-BR", "PT-PT"), "zh": ("ZH-HANS",), "zh-Hant": ("ZH-HANT",)}
_BY_CAPS = {code.upper(): code for code, _ in LANGUAGES}

FIX = "Use a DeepL code such as DE, FR, EN-GB or PT-BR (GET /v2/languages?type=target lists them all)."


def baton_code(code: str, what: str) -> str:
    """Baton's code for a DeepL code (any case); a clear refusal naming an unknown one."""
    caps = code.strip().upper()
    found = VARIANTS.get(caps) or _BY_CAPS.get(caps)
    if found is None or (what == "source" and found == "zh-Hant"):
        raise InvalidArgument(f"'{code[:40]}' is not a {what} language Baton knows.",
                              FIX.replace("type=target", f"type={what}"))
    return found


def deepl_source(code: str) -> str:
    """DeepL's source code for a Baton code: its base language, in capitals ("zh-Hant" -> "ZH")."""
    return code.split("-")[0].upper()


def glossary_code(code: str) -> str:
    """How DeepL writes a glossary's language: the base language, in small letters."""
    return code.split("-")[0].lower()


def sources() -> list[dict[str, str]]:
    return [{"language": deepl_source(code), "name": name} for code, name in LANGUAGES if code != "zh-Hant"]


def targets() -> list[dict[str, object]]:
    """Every target, with the variants DeepL's clients ask for. No version has a formality
    template, so none supports formality."""
    return [{"language": caps, "name": name if len(_TARGETS.get(code, ())) < 2 else f"{name} ({caps[3:]})",
             "supports_formality": False}
            for code, name in LANGUAGES for caps in _TARGETS.get(code, (code.upper(),))]


def glossary_pairs() -> list[dict[str, str]]:
    """Every pair of two different base languages: a Baton glossary term holds for any pair."""
    bases = list(dict.fromkeys(glossary_code(code) for code in NAMES))
    return [{"source_lang": s, "target_lang": t} for s in bases for t in bases if s != t]
