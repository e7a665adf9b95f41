"""Language codes and their English names. Prompt templates name languages ("French"); the chat
settings, the API and evaluation sets carry codes ("fr"): this table turns one into the other.

The list is HY-MT1.5's model card (github.com/Tencent-Hunyuan/HY-MT, "Supported languages"):
33 languages plus 5 ethnic-minority languages and dialects, 38 in all.
"""
from __future__ import annotations

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
CODES: dict[str, str] = {name: code for code, name in LANGUAGES}
