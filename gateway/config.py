"""The gateway's settings, read from BATON_* and `.env` (the engine's are engine.Settings)."""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewayConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BATON_", env_file=".env", extra="ignore")

    # What clients ask for to get whichever version is serving (an admin key may name a version).
    model_alias: str = "baton"
    # /v1/translate: texts per request, and texts translated at once for one request.
    translate_max_texts: int = 64
    translate_concurrency: int = 4
    # Translated files waiting for their download (LibreTranslate's /translate_file): at most this
    # many in all and per key, each for at most this long.
    downloads_kept: int = 32
    downloads_per_key: int = 4
    download_ttl_s: float = 3600.0
    # DeepL's /v2/document: documents translating at once (more wait their turn, refused past
    # twice as many), and translated files kept for download (the oldest first to go) and for how long.
    documents_in_flight: int = 2
    documents_kept: int = 32
    documents_keep_s: float = 3600.0
    # The engine's BATON_DOCUMENT_MAX_BYTES, read here too: /v2/document takes a body that large.
    document_max_bytes: int = 2_000_000
